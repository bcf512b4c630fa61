"""Reads kept while the database is unchanged: a value built from the database is answered again,
without reading anything but one small statement, until anything at all is committed to it.

`database_version()` is a token that stays equal exactly as long as nothing was committed to the
database, by any connection of any process, since it was taken:
- SQLite: `PRAGMA data_version` changes when another connection commits to the file, and the
  connection's own `total_changes` when it writes itself (the pragma does not see its own).
- PostgreSQL: the current snapshot (`pg_current_snapshot()`) names every transaction that was in
  flight or not yet begun; one that commits leaves the in-flight list or moves the horizon, so two
  equal snapshots see the same committed data.
Inside a transaction there is no token (a read there sees its own uncommitted writes), and then
nothing is kept.

The token is taken before the value is built, so a commit in between can only make the kept
value newer than its token says, never older: the next read sees another token and builds anew.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from django.db import connections

T = TypeVar("T")


def database_version(using: str = "default") -> Hashable | None:
    """A token equal to the last one exactly while nothing was committed since (None: no token)."""
    connection = connections[using]
    if connection.in_atomic_block:
        return None
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA data_version")
            (others,) = cursor.fetchone()
        return (others, connection.connection.total_changes)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_current_snapshot()::text")
            (snapshot,) = cursor.fetchone()
        return snapshot
    return None


class WhileUnchanged(Generic[T]):
    """One value per thread, answered again while the database version and `key` are the same
    and `still_good(value)` holds (for what changes with time alone: a lease falling due)."""

    def __init__(self, using: str = "default") -> None:
        self.using = using
        # why: a SQLite token belongs to one connection, and each thread has its own.
        self._held = threading.local()

    def read(
        self, build: Callable[[], T], key: Any = None, still_good: Callable[[T], bool] | None = None
    ) -> T:
        version = database_version(self.using)
        if version is None:
            return build()
        raw = connections[self.using].connection  # a token means nothing on another connection
        held = getattr(self._held, "value", None)
        if (
            held is not None
            and held.fits(raw, version, key)
            and (still_good is None or still_good(held.value))
        ):
            return held.value
        value = build()
        self._held.value = _Held(raw, version, key, value)
        return value


@dataclass(frozen=True)
class _Held(Generic[T]):
    raw: Any  # the DB-API connection the version was read on
    version: Hashable
    key: Any
    value: T

    def fits(self, raw: Any, version: Hashable, key: Any) -> bool:
        return self.raw is raw and self.version == version and self.key is key
