"""Docker vanishing mid-operation, and a worker killed mid-operation: never stuck, never stale."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from django.conf import settings as django_settings
from django.db import connection

from containers import reality, runner, services
from containers.models import Operation, OperationStep
from containers.tests.dockerproxy import CuttableDockerSocket
from gaiaorch.jobs import StepOutcome
from leases import services as leases
from notifications.models import Event

# Operations run in another thread or process beside the API: a real database server is needed.
pytestmark = [pytest.mark.slow, pytest.mark.docker, pytest.mark.postgres]


@pytest.fixture
def docker_proxy(settings, tmp_path):
    proxy = CuttableDockerSocket(Path(f"/tmp/gaiaorch-{os.getpid()}-{tmp_path.name[-12:]}.sock"))
    proxy.open()
    settings.DOCKER_URL = proxy.url
    yield proxy
    proxy.cut()


def wait_for_step(operation_id: int, name: str, within: float = 20.0) -> OperationStep:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        step = OperationStep.objects.filter(operation_id=operation_id, name=name).first()
        if step:
            return step
        time.sleep(0.05)
    raise AssertionError(f"operation #{operation_id} never reached step {name!r}")


def wait_until_ended(operation_id: int, within: float = 30.0) -> Operation:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        operation = Operation.objects.get(pk=operation_id)
        if not operation.is_active:
            return operation
        time.sleep(0.1)
    raise AssertionError(f"operation #{operation_id} still {operation.status} after {within} s")


def test_it_fails_clearly_and_says_unknown_when_docker_stops_during_an_operation(
    docker_stack, docker_proxy, operator_client, run_in_thread
):
    assert operator_client.post("/containers/live/start").status_code == 202
    wait_until_ended(Operation.objects.get().id)
    operation_id = operator_client.post("/containers/live/stop").json()["operation_id"]
    wait_for_step(operation_id, "stop t-stubborn")  # Docker's 2 s grace period is running

    docker_proxy.cut()

    operation = wait_until_ended(operation_id)
    assert operation.status == "failed"
    assert operation.error.startswith("Docker became unreachable")
    assert docker_proxy.url in operation.error
    response = operator_client.post("/containers/live/start")
    assert response.status_code == 503
    assert response.json()["error"] == "docker_unavailable"
    status = operator_client.get("/containers/status").json()
    assert status["docker_available"] is False
    assert {entry["state"] for entry in status["services"]} == {"unknown"}
    live = {role: entry["state"] for role, entry in status["live"].items()}
    assert live == {"mcp": "unknown", "core": "unknown", "web": "unknown", "stubborn": "unknown"}
    # The rest keeps working: the event log, and GPU leases (service API).
    assert operator_client.get("/api/events/?type=docker.unavailable").json()["count"] == 1
    assert leases.acquire(requester="t-core", reason="still works", actor="olivia").granted

    docker_proxy.open()  # Docker is back: the next reconcile picks it up
    reality.reconcile()

    status = operator_client.get("/containers/status").json()
    assert status["docker_available"] is True
    assert "unknown" not in {entry["state"] for entry in status["services"]}


def _worker(config_file: Path, operation_id: int) -> subprocess.Popen:
    """A separate worker process running one operation against the test database."""
    database = connection.settings_dict
    env = {
        **os.environ,
        "GAIAORCH_CONFIG": str(config_file),
        "GAIAORCH_DOCKER_URL": django_settings.DOCKER_URL,
        "DATABASE_URL": f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/{database['NAME']}",
    }
    code = f"import django; django.setup(); from containers import runner; runner.run({operation_id})"
    return subprocess.Popen(
        [sys.executable, "-c", code], env={**env, "DJANGO_SETTINGS_MODULE": "gaiaorch.settings"}
    )


def test_it_resumes_an_operation_whose_worker_was_killed(
    docker_stack, operator_client, tmp_path, monkeypatch, run_inline
):
    assert operator_client.post("/containers/live/start").status_code == 202
    config_file = tmp_path / "orchestrator.yaml"
    config_file.write_text(yaml.safe_dump(docker_stack))
    workers = []
    monkeypatch.setattr(services, "enqueue", lambda operation_id: workers.append(operation_id))
    operation_id = operator_client.post("/containers/live/stop").json()["operation_id"]
    worker = _worker(config_file, operation_id)
    wait_for_step(operation_id, "stop t-stubborn")

    worker.send_signal(signal.SIGKILL)  # the orchestrator's worker dies mid-operation
    worker.wait(timeout=10)
    monkeypatch.setattr(services, "STALE_AFTER_SECONDS", 1.0)
    time.sleep(1.5)
    monkeypatch.setattr(services, "enqueue", runner.run)
    recovered = services.recover_stale_operations()

    assert recovered == [operation_id]
    operation = wait_until_ended(operation_id)
    assert operation.status == "succeeded", operation.error
    assert operation.attempts == 2
    interrupted = OperationStep.objects.filter(operation=operation, outcome=StepOutcome.FAILED).get()
    assert interrupted.name == "stop t-stubborn" and "interrupted" in interrupted.detail
    stops = [
        s.name for s in operation.steps.all() if s.outcome != StepOutcome.FAILED and s.name.startswith("stop")
    ]
    assert stops == ["stop t-stubborn", "stop t-web", "stop t-core", "stop t-mcp"]
    assert Event.objects.filter(type="container.operation_requeued", subject_id=str(operation_id)).exists()
    assert Event.objects.filter(type="container.operation_resumed", subject_id=str(operation_id)).exists()
