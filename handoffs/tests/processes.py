"""Real gaiaorch processes (qcluster, ticker, manage.py commands) against the test database
(the PostgreSQL test database, or the SQLite test file in WAL mode)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import yaml
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def database_url() -> str:
    """The PostgreSQL test database this pytest run uses, as a DATABASE_URL for child processes."""
    db = connection.settings_dict
    password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
    port = f":{db['PORT']}" if db["PORT"] else ""
    return f"postgres://{db['USER']}{password}@{db['HOST']}{port}/{db['NAME']}"


def environment(tmp_path: Path, stack: dict, fake_gpu_file: str) -> dict[str, str]:
    config_file = tmp_path / "orchestrator.yaml"
    config_file.write_text(yaml.safe_dump(stack))
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("GAIAORCH_", "DATABASE_URL", "REDIS_URL"))
    }
    if connection.vendor == "sqlite":
        env["GAIAORCH_SQLITE_PATH"] = connection.settings_dict["NAME"]  # the test's WAL file
    else:
        env["DATABASE_URL"] = database_url()
    env.update(
        GAIAORCH_CONFIG=str(config_file),
        GAIAORCH_VAR_DIR=str(tmp_path / "var"),
        GAIAORCH_GPU_BACKEND="fake",
        GAIAORCH_FAKE_GPU_FILE=fake_gpu_file,
        GAIAORCH_WORKERS="1",
        # django-q2 signs queued tasks with the secret key: children must verify what this process queues.
        GAIAORCH_SECRET_KEY=settings.SECRET_KEY,
        GAIAORCH_LOG_LEVEL="WARNING",
    )
    return env


class Process:
    """A manage.py command in its own process group, so SIGKILL takes its children too."""

    def __init__(self, env: dict[str, str], *args: str, log: Path):
        self.log = log.open("ab")
        self.popen = subprocess.Popen(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)
        self.log.close()

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
                return
        self.log.close()


def run_command(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def wait_for(condition: Callable[[], object], seconds: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(interval)
    raise AssertionError(f"{what} did not happen within {seconds} s")
