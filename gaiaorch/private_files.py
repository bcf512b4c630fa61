"""Files under var/ that hold secrets are readable and writable by gaiaorch's user only (0600).

The SQLite database holds every account's token digest and session, `secret_key` signs the
sessions, `admin-password` is the operator's password. A file is created 0600 (never written
world-readable first and restricted after); one left 0644 by an earlier version is restricted
when gaiaorch next opens it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PRIVATE = 0o600
SQLITE_COMPANIONS = ("", "-wal", "-shm", "-journal")


def create_private(path: Path, text: str) -> bool:
    """Create `path` holding `text`, 0600 from the start. False (and nothing written) when it
    already exists: a process starting at the same moment made it first."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    return True


def restrict(path: Path) -> None:
    """Make an existing file 0600; a missing one is left missing."""
    with contextlib.suppress(FileNotFoundError):
        os.chmod(path, PRIVATE)


def restrict_sqlite_files(sender, connection, **kwargs) -> None:
    """connection_created: the SQLite database and its journal files are 0600.

    SQLite creates -wal and -shm with the database file's own mode, so once the database is 0600
    they are too; restricting them here as well fixes files left by an earlier version.
    """
    if connection.vendor != "sqlite" or connection.is_in_memory_db():
        return
    name = str(connection.settings_dict["NAME"])
    for suffix in SQLITE_COMPANIONS:
        restrict(Path(name + suffix))
