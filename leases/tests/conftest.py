"""Lease fixtures: a fake GPU probe with controllable VRAM, and the GAIA requesters."""

from __future__ import annotations

from pathlib import Path

import pytest

from gaiaorch import telemetry


class FakeGpus:
    """Drives the `fake` telemetry backend: what the next sample() measures."""

    def __init__(self, path: Path):
        self.path = path

    def set(self, *used_mib: int, total_mib: int = 24576) -> None:
        gpus = [{"index": i, "total_mib": total_mib, "used_mib": used} for i, used in enumerate(used_mib)]
        telemetry.write_fake(self.path, gpus)


@pytest.fixture
def fake_gpus(settings, tmp_path) -> FakeGpus:
    """Two 24 GiB GPUs, nearly idle."""
    settings.GPU_BACKEND = "fake"
    settings.FAKE_GPU_FILE = str(tmp_path / "gpus.json")
    gpus = FakeGpus(tmp_path / "gpus.json")
    gpus.set(512, 512)
    return gpus


@pytest.fixture
def two_gpus(settings):
    """No telemetry; two GPUs by count."""
    settings.GPU_BACKEND = "none"
    settings.GPU_COUNT = 2


@pytest.fixture
def configure_leases(settings):
    """Change keys under leases: for one test (a new document, as an edit would be)."""

    def apply(**values):
        document = settings.GAIAORCH
        settings.GAIAORCH = {**document, "leases": {**(document.get("leases") or {}), **values}}

    return apply


@pytest.fixture
def resident(configure_leases):
    """gaia-core is GPU 0's resident, as config/orchestrator.yaml ships it."""
    configure_leases(residents={0: "gaia-core"})
