"""Files under var/ hold secrets (every account's token digest, the session key, the operator's
password): they are readable by gaiaorch's user only, from the moment they exist."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Holds a connection open while writing, so SQLite's -wal and -shm files exist when looked at.
PROBE = """
import json, os, django
django.setup()
from django.conf import settings
from django.db import connection
from gaiaorch.models import WorkerHeartbeat
WorkerHeartbeat.objects.update_or_create(pk=1)
var = settings.VAR_DIR
names = ["gaiaorch.sqlite3", "gaiaorch.sqlite3-wal", "gaiaorch.sqlite3-shm", "secret_key"]
print(json.dumps({name: oct(os.stat(var / name).st_mode & 0o777) for name in names}))
"""


def _run(var_dir: Path, *args: str) -> subprocess.CompletedProcess:
    environ = {
        "DJANGO_SETTINGS_MODULE": "gaiaorch.settings",
        "GAIAORCH_VAR_DIR": str(var_dir),
        "PATH": "/usr/bin",
    }
    done = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        preexec_fn=lambda: os.umask(0o022),  # the usual umask: new files would be 0644
    )
    assert done.returncode == 0, done.stderr
    return done


def _mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


def test_it_creates_the_database_its_journal_and_the_secret_key_0600(tmp_path):
    _run(tmp_path, "manage.py", "migrate", "-v0")
    modes = json.loads(_run(tmp_path, "-c", PROBE).stdout)
    assert modes == dict.fromkeys(modes, "0o600")


def test_it_writes_the_generated_operator_password_0600(tmp_path):
    _run(tmp_path, "manage.py", "migrate", "-v0")
    _run(tmp_path, "manage.py", "ensure_operator")
    assert _mode(tmp_path / "admin-password") == "0o600"


def test_it_restricts_files_made_world_readable_before(tmp_path):
    database = tmp_path / "gaiaorch.sqlite3"
    sqlite3.connect(database).close()
    (tmp_path / "secret_key").write_text("an old key made by an earlier version")
    for path in (database, tmp_path / "secret_key"):
        path.chmod(0o644)
    _run(tmp_path, "manage.py", "migrate", "-v0")
    assert _mode(database) == _mode(tmp_path / "secret_key") == "0o600"
