from __future__ import annotations

import pytest

# The containers app's real-Docker fixtures (busybox stacks), for the live⇄candidate Docker tests.
from containers.tests.conftest import (  # noqa: F401
    busybox_image,
    docker_client,
    docker_stack,
    inspect,
    run_inline,
    test_network,
)
from handoffs import services, tasks
from handoffs.models import Handoff
from handoffs.tests.fakes import CONTRACT, FakeGpu, FakeService, stack_config

IDLE_MIB = 600
PRIME_LOADED_MIB = 11000
TRAINING_MIB = 17000


@pytest.fixture
def gpu(tmp_path, settings) -> FakeGpu:
    """GPU 0 as the fake telemetry backend shows it: Prime loaded (11000 of 24576 MiB used)."""
    settings.GPU_BACKEND = "fake"
    settings.FAKE_GPU_FILE = str(tmp_path / "fake-gpu.json")
    return FakeGpu(tmp_path / "fake-gpu.json", used_mib=PRIME_LOADED_MIB)


@pytest.fixture
def gaia(gpu, settings):
    """Fake gaia-core, gaia-prime and gaia-study; releasing really frees VRAM unless a test says no."""
    fakes = {name: FakeService(name, routes).start() for name, routes in CONTRACT.items()}
    fakes["gaia-prime"].on("/sleep", gpu.setter(IDLE_MIB))
    fakes["gaia-study"].on("/study/gpu-release", gpu.setter(IDLE_MIB))
    settings.GAIAORCH = stack_config(fakes["gaia-core"].url, fakes["gaia-prime"].url, fakes["gaia-study"].url)
    yield fakes
    for fake in fakes.values():
        fake.stop()


@pytest.fixture
def configure(settings):
    """Change keys under handoffs: / gpu: for one test."""

    def apply(section: str, **values):
        settings.GAIAORCH = {**settings.GAIAORCH, section: {**settings.GAIAORCH[section], **values}}

    return apply


@pytest.fixture
def configure_service(settings):
    """Change keys of one service under services: for one test (a new document, as an edit would be)."""

    def apply(name: str, **values):
        services = {**settings.GAIAORCH["services"]}
        services[name] = {**services[name], **values}
        settings.GAIAORCH = {**settings.GAIAORCH, "services": services}

    return apply


@pytest.fixture
def hold_gpu(db):
    """Give GPU 0's lease to a requester, as the lease service would."""
    from leases import services as leases

    def grant(requester: str):
        result = leases.acquire(requester=requester, reason="test setup", actor=requester)
        assert result.granted, f"{requester} could not get GPU 0: {result}"
        return result.lease

    return grant


@pytest.fixture
def run_handoff():
    """Start a handoff and drive it synchronously, as the worker would."""

    def start_and_run(handoff_type: str = "prime_to_study", **options) -> Handoff:
        handoff = services.start(type=handoff_type, actor="olivia", **options)
        tasks.run_handoff(str(handoff.id))
        return Handoff.objects.get(pk=handoff.pk)

    return start_and_run


@pytest.fixture
def client_for(db):
    """An API client authenticated as the named service account."""
    from conftest import client_for_token
    from gaiaorch.auth import ensure_service_account

    return lambda name: client_for_token(ensure_service_account(name))


@pytest.fixture
def synchronous_worker(monkeypatch):
    """django-q2 runs enqueued tasks inline, in this process, as its sync mode does."""
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)
