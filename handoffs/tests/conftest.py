from __future__ import annotations

import re
import threading
import uuid
from types import SimpleNamespace

import pytest
from django.db import connection

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
from handoffs.tests.fakes import CONTRACT, FakeGpu, FakeService, GpuProcess, stack_config

IDLE_MIB = 600
PRIME_LOADED_MIB = 11000
TRAINING_MIB = 17000
STUDY_MIB = 16384  # what the fake gaia-study allocates when told the GPU is ready


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
def resident(gaia, gpu, settings):
    """gaia-prime holding its model, gaia-study and a stranger as real processes on the fake GPU,
    the two services recognised by their command lines (services.<name>.process). Prime's sleep
    frees its memory and its wake-up takes it back; Study allocates on gpu-ready, frees on
    gpu-release (scripts like the other fakes')."""
    tag = uuid.uuid4().hex[:8]
    processes = {
        name: GpuProcess(f"gaia-fake-{name}-{tag}") for name in ("gaia-prime", "gaia-study", "stranger")
    }
    services = {**settings.GAIAORCH["services"]}
    for name in ("gaia-prime", "gaia-study"):
        services[name] = {**services[name], "process": {"cmdline": re.escape(processes[name].label)}}
    settings.GAIAORCH = {**settings.GAIAORCH, "services": services}
    prime, study = processes["gaia-prime"], processes["gaia-study"]
    for fake in (gaia["gaia-prime"], gaia["gaia-study"]):
        fake.hooks.clear()
    gaia["gaia-prime"].on("/sleep", gpu.holder(prime.pid, 0))
    gaia["gaia-prime"].on("/wake_up", gpu.holder(prime.pid, PRIME_LOADED_MIB))
    gaia["gaia-study"].on("/study/gpu-ready", gpu.holder(study.pid, STUDY_MIB))
    gaia["gaia-study"].on("/study/gpu-release", gpu.holder(study.pid, 0))
    gpu.hold(prime.pid, PRIME_LOADED_MIB)
    yield SimpleNamespace(**{name.replace("-", "_"): process for name, process in processes.items()})
    for process in processes.values():
        process.stop()


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
def client_for(db, service_token):
    """An API client authenticated as the named service account."""
    from conftest import client_for_token

    return lambda name: client_for_token(service_token(name))


@pytest.fixture
def synchronous_worker(monkeypatch):
    """django-q2 runs enqueued tasks inline, in this process, as its sync mode does."""
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)


@pytest.fixture
def worker(monkeypatch):
    """Drives every started handoff in a thread, as a worker process would, while the request waits.
    Needs a transactional test (the thread sees committed rows only)."""
    threads: list[threading.Thread] = []

    def drive(handoff_id) -> None:
        try:
            tasks.run_handoff(str(handoff_id))
        finally:
            connection.close()

    def enqueue(handoff_id) -> None:
        thread = threading.Thread(target=drive, args=(handoff_id,), daemon=True)
        threads.append(thread)
        thread.start()

    monkeypatch.setattr(services, "enqueue", enqueue)
    yield threads
    for thread in threads:
        thread.join(30)
