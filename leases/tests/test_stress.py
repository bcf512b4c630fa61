"""No GPU stuck behind a ghost: real daphne processes on PostgreSQL, clients that hang up mid-wait
(some while their entry is being made), a web process killed with SIGKILL while waits are open on
it, waiters that retry elsewhere as the docs advise and waiters that never come back.

Phases, about 20 s in all: while one client holds GPU 0, the others queue, hang up and come back,
and web A is killed; then the holder releases and the queue drains through the ghosts (entries of
killed waits still inside their grace period). Afterwards the lease rows say whether any grant
went to nobody for longer than the claim window, whether two leases ever overlapped, whether
fencing tokens followed grant order, and every answer is checked for a 5xx.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta

import httpx
import pytest
from django.db import connection

from bench.leases_http import start_daphne
from gaiaorch.auth import ensure_service_account
from leases import services
from leases.models import Lease, LeaseStatus
from notifications.models import Event

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

GRACE_SECONDS = 5
CLAIM_SECONDS = 1
REAPER_SECONDS = 0.2
SLACK_SECONDS = 1.5  # the reaper's interval, a poll, a loaded two-core machine
HANGERS, RETRIERS, DESERTERS, QUEUERS = 4, 3, 3, 2


@dataclass
class Record:
    statuses: list[int] = field(default_factory=list)
    received: set[str] = field(default_factory=set)  # lease ids a client got a 200 for
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, status: int, body: dict) -> None:
        with self.lock:
            self.statuses.append(status)
            if status == 200 and body.get("status") == "active":
                self.received.add(body["lease_id"])


def write_config(tmp_path, names: list[str], database_url: str) -> dict[str, str]:
    config = tmp_path / "orchestrator.yaml"
    document = {
        "gpu": {"backend": "none", "count": 1},
        "leases": {"waiter_grace_seconds": GRACE_SECONDS, "claim_window_seconds": CLAIM_SECONDS},
        "services": {name: {} for name in names},
    }
    config.write_text(json.dumps(document))
    env = {**os.environ, "GAIAORCH_CONFIG": str(config), "GAIAORCH_VAR_DIR": str(tmp_path)}
    env.update(GAIAORCH_LOG_LEVEL="WARNING", DATABASE_URL=database_url)
    env.pop("REDIS_URL", None)
    return env


def raw_wait(base: str, token: str, body: dict) -> socket.socket:
    """Send POST /gpu/wait on a socket of our own, to hang up whenever we like."""
    host, port = base.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    sock = socket.create_connection((host, int(port)))
    head = (
        f"POST /gpu/wait HTTP/1.1\r\nHost: {host}\r\nAuthorization: Token {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    )
    sock.sendall(head.encode() + payload)
    return sock


def answer_of(sock: socket.socket) -> tuple[int, dict] | None:
    """The answer already sent on the socket, if any (then the client did get it)."""
    if not select.select([sock], [], [], 0)[0]:
        return None
    sock.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    if not data:
        return None
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body or b"{}")


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def post(client: httpx.Client, path: str, body: dict, record: Record) -> tuple[int, dict]:
    response = client.post(path, json=body)
    payload = response.json()
    record.answer(response.status_code, payload)
    return response.status_code, payload


def test_it_never_lets_a_ghost_hold_a_gpu_across_hang_ups_and_a_killed_web_process(tmp_path, settings):
    assert connection.vendor == "postgresql"
    names = ["holder", *(f"hanger-{n}" for n in range(HANGERS)), *(f"retrier-{n}" for n in range(RETRIERS))]
    names += [*(f"deserter-{n}" for n in range(DESERTERS)), *(f"queuer-{n}" for n in range(QUEUERS))]
    settings.GAIAORCH = {
        **settings.GAIAORCH,
        "gpu": {"backend": "none", "count": 1},
        "leases": {"waiter_grace_seconds": GRACE_SECONDS, "claim_window_seconds": CLAIM_SECONDS},
        "services": {name: {} for name in names},
        "handoffs": {},
    }
    settings.GPU_BACKEND, settings.GPU_COUNT = "none", 1
    tokens = {name: ensure_service_account(name, rotate=True) for name in names}
    db = connection.settings_dict
    env = write_config(tmp_path, names, f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}")
    servers = {}
    starting = [
        threading.Thread(
            target=lambda label=label: servers.update({label: start_daphne("console.asgi:application", env)})
        )
        for label in ("a", "b")
    ]
    for thread in starting:
        thread.start()
    for thread in starting:
        thread.join()
    (web_a, base_a), (web_b, base_b) = servers["a"], servers["b"]
    record = Record()
    stop_reaper = threading.Event()

    def reaper() -> None:  # the ticker's lease job, as its own process would run it
        try:
            while not stop_reaper.wait(REAPER_SECONDS):
                services.reap()
        finally:
            connection.close()

    def client(base: str, name: str) -> httpx.Client:
        return httpx.Client(base_url=base, headers={"Authorization": f"Token {tokens[name]}"}, timeout=20)

    def wait_body(name: str, timeout: float) -> dict:
        return {"requester": name, "reason": "stress", "timeout_seconds": timeout}

    def hanger(name: str, until: float) -> None:
        """Hangs up mid-wait again and again (at once, while its entry is made, or later),
        sometimes comes back with the same request."""
        rng = random.Random(name)
        while time.monotonic() < until:
            sock = raw_wait(
                rng.choice([base_a, base_b]) if web_a.poll() is None else base_b,
                tokens[name],
                wait_body(name, 30),
            )
            time.sleep(rng.choice([0, 0.001, 0.01, 0.05, 0.3]))
            got = answer_of(sock)
            sock.close()
            if got is not None:
                record.answer(*got)
            time.sleep(rng.uniform(0, 0.2))

    def waiter(name: str, base: str, rounds: int) -> str | None:
        """Waits (calling again after each timeout, keeping its place) until granted; releases."""
        with client(base, name) as http:
            for _ in range(rounds):
                status, body = post(http, "/gpu/wait", wait_body(name, 2), record)
                if status == 200:
                    time.sleep(0.05)
                    post(http, "/gpu/release", {"lease_id": body["lease_id"]}, record)
                    return body["lease_id"]
        return None

    def on_a_then_b(name: str, retry: bool) -> None:
        """Waits on web A; when A is killed, retries on B as the docs advise, or never comes back."""
        try:
            with client(base_a, name) as http:
                post(http, "/gpu/wait", wait_body(name, 30), record)
        except httpx.TransportError:
            if retry:
                waiter(name, base_b, rounds=20)

    threading.Thread(target=reaper, daemon=True).start()
    try:
        with client(base_b, "holder") as http:
            status, held = post(http, "/gpu/acquire", {"requester": "holder", "reason": "stress"}, record)
        assert status == 200
        started = time.monotonic()
        hangers = [
            threading.Thread(target=hanger, args=(f"hanger-{n}", started + 2.5)) for n in range(HANGERS)
        ]
        others = [threading.Thread(target=on_a_then_b, args=(f"retrier-{n}", True)) for n in range(RETRIERS)]
        others += [
            threading.Thread(target=on_a_then_b, args=(f"deserter-{n}", False)) for n in range(DESERTERS)
        ]
        others += [threading.Thread(target=waiter, args=(f"queuer-{n}", base_b, 30)) for n in range(QUEUERS)]
        for worker in hangers + others:
            worker.start()
        time.sleep(3)
        web_a.kill()  # SIGKILL: its open waits end without a word
        web_a.wait(10)
        for worker in hangers:
            worker.join(10)
        # The deserters' entries are still inside their grace period: ghosts, at the head of the queue.
        with client(base_b, "holder") as http:
            post(http, "/gpu/release", {"lease_id": held["lease_id"]}, record)
        for worker in others:
            worker.join(40)
        deadline = time.monotonic() + GRACE_SECONDS + CLAIM_SECONDS + 10
        while Lease.objects.live().exists() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        stop_reaper.set()
        for server in (web_a, web_b):
            if server.poll() is None:
                server.terminate()
                server.wait(10)

    assert [status for status in record.statuses if status >= 500] == []
    assert not Lease.objects.live().exists(), "a lease outlived every client that could hold it"
    granted = list(Lease.objects.filter(granted_at__isnull=False).order_by("granted_at"))
    assert [lease.fencing_token for lease in granted] == list(range(1, len(granted) + 1))
    for before, after in itertools.pairwise(granted):
        assert before.ended_at <= after.granted_at, f"{before.requester} and {after.requester} overlapped"
    ghosts = [lease for lease in granted if str(lease.id) not in record.received]
    for ghost in ghosts:
        held_for = ghost.ended_at - ghost.granted_at
        assert ghost.status == LeaseStatus.EXPIRED and "not claimed" in ghost.end_reason, ghost.end_reason
        assert held_for <= timedelta(seconds=CLAIM_SECONDS + SLACK_SECONDS), (ghost.requester, held_for)
    unclaimed = Event.objects.filter(type="lease.unclaimed").values_list("subject_id", flat=True)
    assert sorted(unclaimed) == sorted(str(ghost.id) for ghost in ghosts)
    assert {lease.requester for lease in granted} >= {f"retrier-{n}" for n in range(RETRIERS)}
    assert {lease.requester for lease in granted} >= {f"queuer-{n}" for n in range(QUEUERS)}
    assert ghosts, "the deserters queued first: their entries, inside their grace period, were granted"
