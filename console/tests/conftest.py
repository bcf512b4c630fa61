"""Fixtures of the coordinator's own endpoints: fake GPU telemetry, a Docker Engine never called."""

from __future__ import annotations

import docker
import pytest

from containers import services as containers
from containers.services import docker_reachable
from gaiaorch import services, telemetry
from gaiaorch.auth import issue_token
from handoffs.tests.conftest import (  # noqa: F401 (crash suite, callers, GPU figures, metrics)
    configure,
    gaia,
    gpu,
    hold_gpu,
    resident,
    run_handoff,
    worker,
)
from leases import services as leases


@pytest.fixture
def fake_gpu(settings, tmp_path):
    """One idle 24 GiB GPU behind the `fake` telemetry backend."""
    settings.GPU_BACKEND = "fake"
    settings.GPU_COUNT = 1
    settings.FAKE_GPU_FILE = str(tmp_path / "gpus.json")
    telemetry.write_fake(tmp_path / "gpus.json", [{"index": 0, "total_mib": 24576, "used_mib": 512}])
    return tmp_path / "gpus.json"


@pytest.fixture
def two_gpus(settings, tmp_path):
    """Two idle 24 GiB GPUs behind the `fake` telemetry backend."""
    settings.GPU_BACKEND = "fake"
    settings.GPU_COUNT = 2
    settings.FAKE_GPU_FILE = str(tmp_path / "gpus.json")
    gpus = [{"index": index, "total_mib": 24576, "used_mib": 512} for index in range(2)]
    telemetry.write_fake(tmp_path / "gpus.json", gpus)
    return tmp_path / "gpus.json"


@pytest.fixture
def no_docker_calls(monkeypatch):
    """Any attempt to reach the Docker Engine fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a status request must not call the Docker Engine")

    monkeypatch.setattr(docker.APIClient, "__init__", refuse)
    monkeypatch.setattr(docker.DockerClient, "__init__", refuse)


@pytest.fixture
def everything_up(fake_gpu, db):
    docker_reachable(reachable=True)
    services.stamp_worker_heartbeat()


@pytest.fixture
def core_lease(db):
    """gaia-core holds GPU 0."""
    return leases.acquire(requester="gaia-core", reason="serving", actor="gaia-core").lease


@pytest.fixture
def operator_token_client(anonymous_client, django_user_model, db):
    """Olivia with a real token, so the async /gpu/wait (token-only) accepts her too."""
    olivia = django_user_model.objects.create_user("olivia", is_staff=True)
    anonymous_client.credentials(HTTP_AUTHORIZATION=f"Token {issue_token(olivia)}")
    return anonymous_client


@pytest.fixture
def operations_accepted(settings, monkeypatch, db):
    """Docker answers and the shared network is configured (swaps need it); container operations
    are only recorded, not run."""
    settings.GAIAORCH = {**settings.GAIAORCH, "docker": {**settings.GAIAORCH["docker"], "network": "gaia"}}
    monkeypatch.setattr(containers, "require_docker", lambda: containers.docker_reachable(reachable=True))
    monkeypatch.setattr(containers, "enqueue", lambda operation_id: None)
