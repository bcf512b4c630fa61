"""gaiaorch's real processes for end-to-end tests: daphne, the django-q2 worker and the ticker."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = {
    "web": lambda port: ["-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "console.asgi:application"],
    "worker": lambda port: ["manage.py", "qcluster"],
    "ticker": lambda port: ["manage.py", "ticker"],
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ensure_postgres_database(url: str) -> None:
    """The stack's own database (DATABASE_URL_TEST names it) is created when missing."""
    import psycopg
    from psycopg import sql

    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    maintenance = urlunparse(parsed._replace(path="/postgres"))
    try:
        with psycopg.connect(maintenance, autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    except psycopg.OperationalError as exc:
        raise AssertionError(f"PostgreSQL at {url} is needed (start it: scripts/provision): {exc}") from None


class Stack:
    """Processes sharing one database; `notifications` is the YAML section they run with."""

    def __init__(self, var_dir: Path, notifications: dict | None = None, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = yaml.safe_load((ROOT / "config" / "orchestrator.yaml").read_text())
        config["notifications"] = {**config.get("notifications", {}), **(notifications or {})}
        config_file = var_dir / "orchestrator.yaml"
        config_file.write_text(yaml.safe_dump(config))
        base = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
        self.env = {
            **base,
            "GAIAORCH_VAR_DIR": str(var_dir),
            "GAIAORCH_CONFIG": str(config_file),
            "GAIAORCH_WORKERS": "2",
            "GAIAORCH_LOG_LEVEL": "WARNING",
            **(env or {}),
        }
        self.children: dict[str, subprocess.Popen] = {}
        self.token = ""

    def start(self, *names: str) -> Stack:
        self.manage("migrate", "--noinput", "-v0")
        # --rotate: the stack database may be one a previous run kept, token included
        self.token = self.manage("service_account", "gaia-web", "--rotate").strip()
        for name in names:
            self.children[name] = subprocess.Popen(
                [sys.executable, *PROCESSES[name](self.port)], cwd=ROOT, env=self.env
            )
        if "web" in names:
            self.wait_healthy()
        return self

    def manage(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, f"manage.py {' '.join(args)} failed:\n{done.stderr}"
        return done.stdout

    def query(self, code: str):
        """Run Python in a Django shell of the stack and return what it prints as JSON."""
        return json.loads(self.manage("shell", "-c", code).strip().splitlines()[-1])

    def ws_url(self, query: str = "") -> str:
        return f"ws://127.0.0.1:{self.port}/ws/notifications?token={self.token}" + (
            f"&{query}" if query else ""
        )

    def events_after(self, after: int) -> list[dict]:
        response = httpx.get(f"{self.url}/api/events/?after={after}&limit=1000", timeout=5)
        return response.json()["results"]

    def wait_for_events(self, after: int, count: int, seconds: float = 30) -> list[dict]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            events = self.events_after(after)
            if len(events) >= count:
                return events
            time.sleep(0.1)
        raise AssertionError(f"{count} events after #{after} were not written within {seconds} s")

    def wait_healthy(self, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.children["web"].poll() is not None:
                raise AssertionError("daphne exited during start-up")
            try:
                httpx.get(f"{self.url}/health", timeout=1).raise_for_status()
                return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError(f"daphne did not answer on {self.url} within {seconds} s")

    def stop(self) -> None:
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in self.children.values():
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
