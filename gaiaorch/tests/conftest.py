"""Fixtures of the coordinator's own endpoints: fake GPU telemetry, a Docker Engine never called."""

from __future__ import annotations

import docker
import pytest

from gaiaorch import telemetry


@pytest.fixture
def fake_gpu(settings, tmp_path):
    """One idle 24 GiB GPU behind the `fake` telemetry backend."""
    settings.GPU_BACKEND = "fake"
    settings.GPU_COUNT = 1
    settings.FAKE_GPU_FILE = str(tmp_path / "gpus.json")
    telemetry.write_fake(tmp_path / "gpus.json", [{"index": 0, "total_mib": 24576, "used_mib": 512}])
    return tmp_path / "gpus.json"


@pytest.fixture
def no_docker_calls(monkeypatch):
    """Any attempt to reach the Docker Engine fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a status request must not call the Docker Engine")

    monkeypatch.setattr(docker.APIClient, "__init__", refuse)
    monkeypatch.setattr(docker.DockerClient, "__init__", refuse)
