"""Crash suite: real web, worker and ticker processes on PostgreSQL, SIGKILLed under load.

Lease cycles run over HTTP while the web process and the worker are killed and restarted; a
handoff against fake GAIA services loses its worker and its web process mid-phase. Afterwards:
every lease change has its event, at most one active lease per GPU, fencing tokens increase in
grant order, no handoff or container operation is left in progress, and the restarted worker
consumes the heartbeat tasks that /ready checks.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from django.utils import timezone
from rest_framework.authtoken.models import Token

from containers.models import Operation, OperationStatus
from gaiaorch.models import WorkerHeartbeat
from handoffs.models import Handoff, Phase
from handoffs.tests.conftest import IDLE_MIB
from handoffs.tests.processes import ROOT, Process, environment, wait_for
from leases.models import Lease, LeaseStatus
from notifications.models import Event

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

RECOVERY_PROMISE_SECONDS = 30  # docs/operations.md: what a restart takes to finish interrupted work
WAIT = {"reason": "crash suite", "timeout_seconds": 2, "ttl_seconds": 30}
REQUESTERS = ["gaia-prime", "gaia-core", "gaia-study", "gaia-core-candidate"]


class Daphne(Process):
    """The web process as deployed (daphne), in its own process group like the others."""

    def __init__(self, env: dict[str, str], port: int, log: Path):
        self.log = log.open("ab")
        command = ["-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "console.asgi:application"]
        self.popen = subprocess.Popen(
            [sys.executable, *command],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Deployment:
    env: dict[str, str]
    tmp_path: Path
    port: int = field(default_factory=free_port)
    running: dict[str, Process] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, name: str) -> None:
        log = self.tmp_path / f"{name}.log"
        if name == "web":
            self.running[name] = Daphne(self.env, self.port, log)
            wait_for(self._answers, 60, "daphne answering /health", interval=0.2)
        else:
            self.running[name] = Process(self.env, {"worker": "qcluster"}.get(name, name), log=log)

    def kill(self, name: str) -> None:
        self.running.pop(name).kill()

    def restart(self, name: str) -> None:
        self.kill(name)
        self.start(name)

    def stop(self) -> None:
        for process in self.running.values():
            process.stop()

    def _answers(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False


@pytest.fixture
def deployment(gaia, settings, tmp_path, configure, django_user_model):
    """web + worker + ticker on this test's PostgreSQL database, with fake GAIA services."""
    configure("handoffs", phase_timeout_seconds=20, stale_after_seconds=6, recovery_interval_seconds=1)
    env = environment(tmp_path, settings.GAIAORCH, settings.FAKE_GPU_FILE)
    olivia = django_user_model.objects.create_user("olivia", is_staff=True)
    env["CRASH_TOKEN"] = Token.objects.create(user=olivia).key
    deployment = Deployment(env, tmp_path)
    for name in ("web", "worker", "ticker"):
        deployment.start(name)
    yield deployment
    deployment.stop()


@dataclass
class LeaseLoad:
    """Requesters cycling wait → release over HTTP, recording what the server acknowledged."""

    url: str
    token: str
    grants: dict[str, int] = field(default_factory=dict)  # lease id -> fencing token, as answered
    releases: set[str] = field(default_factory=set)
    refused: list[str] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def run(self, requester: str) -> None:
        with httpx.Client(base_url=self.url, headers={"Authorization": f"Token {self.token}"}) as client:
            while not self.stopping.is_set():
                body = {
                    "requester": requester,
                    "reason": "crash suite",
                    "timeout_seconds": 2,
                    "ttl_seconds": 30,
                }
                answer = self._post(client, "/gpu/wait", body)
                if answer is not None and answer.status_code == 200:
                    lease_id = answer.json()["lease_id"]
                    self.grants[lease_id] = answer.json()["fencing_token"]
                    self._release(client, lease_id)

    def _release(self, client: httpx.Client, lease_id: str) -> None:
        # Retried across a killed web process: an acknowledged grant must end in a release or expiry.
        while not self.stopping.is_set():
            answer = self._post(client, "/gpu/release", {"lease_id": lease_id})
            if answer is None:
                continue
            if answer.status_code == 200:
                self.releases.add(lease_id)
            elif answer.status_code != 409:  # 409: it expired meanwhile, which is recorded too
                self.refused.append(f"release {lease_id}: {answer.status_code} {answer.text}")
            return

    def _post(self, client: httpx.Client, path: str, body: dict) -> httpx.Response | None:
        try:
            answer = client.post(path, json=body, timeout=10)
        except httpx.HTTPError:
            time.sleep(0.1)  # the web process is down: a client retries
            return None
        if answer.status_code >= 500:
            self.refused.append(f"{path}: {answer.status_code} {answer.text}")
        return answer


def _events_by_lease() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for subject, kind in Event.objects.filter(subject_kind="lease").values_list("subject_id", "type"):
        found.setdefault(subject, set()).add(kind)
    return found


def check_lease_invariants(load: LeaseLoad) -> None:
    events = _events_by_lease()
    leases = {str(lease.id): lease for lease in Lease.objects.all()}
    for lease_id, token in load.grants.items():
        assert leases[lease_id].fencing_token == token, f"lease {lease_id} answered token {token}"
        assert "lease.granted" in events.get(lease_id, set()), f"acknowledged grant {lease_id} has no event"
    for lease_id in load.releases:
        assert leases[lease_id].status == LeaseStatus.RELEASED
        assert "lease.released" in events.get(lease_id, set()), (
            f"acknowledged release {lease_id} has no event"
        )
    for lease_id, lease in leases.items():
        expected = {"lease.requested"} | ({"lease.granted"} if lease.granted_at else set())
        if lease.status in LeaseStatus.terminal():
            expected.add(f"lease.{lease.status}")
        assert expected <= events.get(lease_id, set()), f"lease {lease_id} ({lease.status}) lacks events"
    assert Lease.objects.filter(status=LeaseStatus.ACTIVE).count() <= 1
    granted = Lease.objects.filter(fencing_token__isnull=False).order_by("fencing_token")
    grant_times = [lease.granted_at for lease in granted]
    assert grant_times == sorted(grant_times), "fencing tokens do not increase in grant order"


def check_nothing_in_progress() -> None:
    assert not Handoff.objects.active().exists(), list(Handoff.objects.active().values("id", "phase"))
    assert not Operation.objects.filter(status__in=OperationStatus.active()).exists()


def test_it_keeps_lease_invariants_when_web_and_worker_are_killed_under_load(deployment):
    load = LeaseLoad(deployment.url, deployment.env["CRASH_TOKEN"])
    threads = [threading.Thread(target=load.run, args=(name,)) for name in REQUESTERS]
    for thread in threads:
        thread.start()
    for victim in ("web", "worker", "web", "ticker", "web"):
        time.sleep(2)
        deployment.restart(victim)
        restarted_at = timezone.now()
    time.sleep(2)
    load.stopping.set()
    for thread in threads:
        thread.join(timeout=30)
    assert not load.refused, load.refused
    assert len(load.grants) >= 10, f"only {len(load.grants)} grants: the load did not run"
    check_lease_invariants(load)
    check_nothing_in_progress()
    check_worker_ready_after(deployment, restarted_at)


def check_worker_ready_after(deployment: Deployment, moment) -> None:
    """The restarted worker consumes the ticker's heartbeat tasks, and /ready says so."""
    consumed = lambda: WorkerHeartbeat.objects.filter(consumed_at__gt=moment).exists()  # noqa: E731
    wait_for(consumed, 20, "a heartbeat consumed by the restarted worker", interval=0.2)
    worker = httpx.get(f"{deployment.url}/ready", timeout=5).json()["checks"]["worker"]
    assert worker["ok"] is True, worker


def test_it_finishes_a_handoff_whose_web_and_worker_were_killed(deployment, gaia, gpu, hold_gpu):
    hold_gpu("gaia-core")
    gaia["gaia-prime"].hooks.clear()  # VRAM stays loaded: the worker waits in the cleanup phase
    headers = {"Authorization": f"Token {deployment.env['CRASH_TOKEN']}"}
    started = httpx.post(f"{deployment.url}/handoff/prime-to-study", json={}, headers=headers, timeout=10)
    assert started.status_code == 202, started.text
    handoff_id = started.json()["handoff_id"]
    in_cleanup = lambda: Handoff.objects.filter(pk=handoff_id, phase=Phase.WAITING_CUDA_CLEANUP).exists()  # noqa: E731
    wait_for(in_cleanup, 60, "the worker reaching the cleanup phase")
    deployment.kill("worker")
    deployment.restart("web")
    gpu.set(IDLE_MIB)  # the VRAM is freed while no worker runs
    deployment.start("worker")
    alive = time.monotonic()
    done = lambda: Handoff.objects.filter(pk=handoff_id, phase=Phase.COMPLETED).exists()  # noqa: E731
    wait_for(done, RECOVERY_PROMISE_SECONDS, "the handoff completing after the restart", interval=0.2)
    assert time.monotonic() - alive < RECOVERY_PROMISE_SECONDS
    status = httpx.get(f"{deployment.url}/handoff/{handoff_id}/status", timeout=5).json()
    assert status["phase"] == "completed"
    assert Event.objects.filter(type="handoff.completed", subject_id=handoff_id).exists()
    assert Lease.objects.get(status=LeaseStatus.ACTIVE).requester == "gaia-study"
    check_nothing_in_progress()
    check_worker_ready_after(deployment, timezone.now())
