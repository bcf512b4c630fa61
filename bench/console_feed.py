"""Latency of what the operator dashboard polls (GET /admin/dashboard/feed and /gpus), through daphne.

The dashboard asks for both every two seconds per open browser tab. The bench sets up what a busy
box shows: 2 fake GPUs (one held, 3 waiters on it), a running handoff, the configured services and
1000 events, then asks the feed as a logged-in operator.

    .venv/bin/python bench/console_feed.py [--requests 500]

Uses a throw-away SQLite database under a temporary directory, or DATABASE_URL when set (an
existing database; a rerun adds 1000 more events and reuses the rest).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
SETUP = """
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.sessions.backends.db import SessionStore
from handoffs.models import Handoff
from leases import services as leases
from notifications.services import record_event

leases.acquire(requester="gaia-core", reason="serving", actor="gaia-core")
for name in ("gaia-study", "gaia-core-candidate", "gaia-web"):
    leases.acquire(requester=name, reason="bench", actor=name)
if not Handoff.objects.active().exists():
    Handoff.objects.create(
        type="prime_to_study", source="gaia-core", destination="gaia-study", requested_by="bench"
    )
for number in range(1000):
    record_event("manual.event", f"event {number}", actor="bench")
user, _ = get_user_model().objects.get_or_create(username="bench-operator", defaults={"is_staff": True})
session = SessionStore()
session.update({SESSION_KEY: str(user.pk), BACKEND_SESSION_KEY: "django.contrib.auth.backends.ModelBackend",
                HASH_SESSION_KEY: user.get_session_auth_hash()})
session.create()
print(session.session_key)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def environment(var_dir: Path, port: int) -> dict[str, str]:
    gpus = var_dir / "gpus.json"
    gpus.write_text(
        json.dumps(
            {"gpus": [{"index": i, "total_mib": 81559, "used_mib": 40000 - 39000 * i} for i in (0, 1)]}
        )
    )
    return {
        **os.environ,
        "GAIAORCH_VAR_DIR": str(var_dir),
        "GAIAORCH_PORT": str(port),
        "GAIAORCH_GPU_BACKEND": "fake",
        "GAIAORCH_FAKE_GPU_FILE": str(gpus),
    }


def manage(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    command = [sys.executable, "manage.py", *args]
    return subprocess.run(
        command, cwd=ROOT, env=env, input=stdin, capture_output=True, text=True, check=True
    ).stdout


def wait_until_up(client: httpx.Client) -> None:
    for _ in range(200):
        try:
            client.get("/health")
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("daphne did not start")


def timed(client: httpx.Client, path: str, requests: int) -> tuple[list[float], httpx.Response]:
    for _ in range(20):
        client.get(path).raise_for_status()
    timings = []
    for _ in range(requests):
        started = time.perf_counter()
        answer = client.get(path)
        timings.append((time.perf_counter() - started) * 1000)
        answer.raise_for_status()
    return timings, answer


def measure(client: httpx.Client, requests: int) -> dict[str, list[float]]:
    """The two answers the page asks for on every poll: the JSON feed and the GPU cards."""
    feed, answer = timed(client, "/admin/dashboard/feed", requests)
    body = answer.json()
    assert body["gpu"]["gpus"][0]["owner"] == "gaia-core" and len(body["gpu"]["gpus"][0]["queue"]) == 3
    assert body["handoffs"]["active"] and len(body["events"]) == 15
    print(f"feed answer: {len(answer.content)} bytes")
    cards, answer = timed(client, "/admin/dashboard/gpus", requests)
    assert "Held by <strong>gaia-core</strong>" in answer.text and answer.text.count("Cancel…") == 3
    print(f"GPU cards answer: {len(answer.content)} bytes")
    return {"feed": feed, "gpus": cards}


def report(name: str, timings: list[float]) -> None:
    ordered = sorted(timings)

    def pick(share: float) -> float:
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))]

    print(
        f"{name}: requests {len(timings)}: mean {statistics.mean(timings):.2f} ms, p50 {pick(0.5):.2f} ms, "
        f"p95 {pick(0.95):.2f} ms, p99 {pick(0.99):.2f} ms, max {ordered[-1]:.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as var_dir:
        port = free_port()
        env = environment(Path(var_dir), port)
        manage(env, "migrate", "--noinput")
        session = manage(env, "shell", stdin=SETUP).strip().splitlines()[-1]
        server = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "console.asgi:application"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", cookies={"sessionid": session}) as client:
                wait_until_up(client)
                for name, timings in measure(client, options.requests).items():
                    report(name, timings)
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
