"""live⇄candidate against the real Docker Engine, through the containers app's real operations.

The busybox stacks come from the containers app's fixtures. VRAM follows the containers: a
watcher drops the fake telemetry figure only once Docker says the source's GPU container exited.
This host has no NVIDIA container runtime, so a real GPU start of the candidate fails (the
rollback test relies on exactly that); the round-trip test stands in a CPU-only host's answer to
the GPU device request (none asked) so that the candidate can start.
"""

from __future__ import annotations

import threading

import pytest

from handoffs import services, tasks
from handoffs.models import Phase
from handoffs.tests.fakes import FakeGpu
from leases import holdings
from leases import services as leases

pytestmark = [pytest.mark.slow, pytest.mark.docker]

LOADED_MIB = 20000  # of 24576: less free than the candidate's 6144 MiB
IDLE_MIB = 600


@pytest.fixture
def handoff_stack(docker_stack, settings, tmp_path):
    settings.GPU_BACKEND = "fake"
    settings.FAKE_GPU_FILE = str(tmp_path / "fake-gpu.json")
    settings.GAIAORCH = {
        **docker_stack,
        "gpu": {"poll_ms": 50, "residual_mib": 512, "settle_window_ms": 100, "settle_samples": 2},
        "handoffs": {
            "live_to_candidate": {
                "source": "t-core",
                "destination": "t-core-candidate",
                "release": "containers",
                "signal": "containers",
            },
            "candidate_to_live": {
                "source": "t-core-candidate",
                "destination": "t-core",
                "release": "containers",
                "signal": "containers",
            },
            "phase_timeout_seconds": 60,
        },
    }
    return FakeGpu(tmp_path / "fake-gpu.json", used_mib=LOADED_MIB)


def free_vram_when_stopped(gpu: FakeGpu, inspect, config: dict, service: str) -> threading.Thread:
    """VRAM is freed when the container is really gone, not when anyone says so."""

    def watch() -> None:
        for _ in range(600):
            state = (inspect(config, service) or {}).get("State", {})
            if state and not state.get("Running"):
                gpu.set(IDLE_MIB)
                return
            threading.Event().wait(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    return watcher


def test_it_moves_the_gpu_between_the_real_stacks_and_back(handoff_stack, docker_stack, inspect, monkeypatch):
    from containers import engine
    from containers import services as containers

    monkeypatch.setattr(engine, "gpu_device_requests", lambda gpu: [])

    containers.request_stack_operation("live_start", actor="test")
    leases.acquire(requester="t-core", reason="prime inference", actor="t-core")
    watcher = free_vram_when_stopped(handoff_stack, inspect, docker_stack, "t-core")

    there = services.start(type="live_to_candidate", actor="olivia")
    tasks.run_handoff(str(there.id))
    watcher.join(timeout=5)
    there.refresh_from_db()
    assert there.phase == Phase.COMPLETED, there.error
    assert not inspect(docker_stack, "t-core")["State"]["Running"]
    assert inspect(docker_stack, "t-core-candidate")["State"]["Running"]
    assert holdings.current_holder(0).requester == "t-core-candidate"
    cleanup = there.phases.get(name="waiting_cuda_cleanup").figures
    assert (cleanup["vram_before_mib"], cleanup["used_mib"]) == (LOADED_MIB, IDLE_MIB)

    handoff_stack.set(LOADED_MIB)  # the candidate loaded its models
    watcher = free_vram_when_stopped(handoff_stack, inspect, docker_stack, "t-core-candidate")
    back = services.start(type="candidate_to_live", actor="olivia")
    tasks.run_handoff(str(back.id))
    watcher.join(timeout=5)
    back.refresh_from_db()
    assert back.phase == Phase.COMPLETED, back.error
    assert inspect(docker_stack, "t-core")["State"]["Running"]
    assert not inspect(docker_stack, "t-core-candidate")["State"]["Running"]
    assert holdings.current_holder(0).requester == "t-core"


def test_it_restarts_the_live_services_when_the_candidate_cannot_get_the_gpu(
    handoff_stack, docker_stack, inspect
):
    from containers import services as containers

    containers.request_stack_operation("live_start", actor="test")
    leases.acquire(requester="t-core", reason="prime inference", actor="t-core")
    free_vram_when_stopped(handoff_stack, inspect, docker_stack, "t-core")

    handoff = services.start(type="live_to_candidate", actor="olivia")
    tasks.run_handoff(str(handoff.id))
    handoff.refresh_from_db()
    assert handoff.phase == Phase.FAILED
    assert handoff.error["phase"] == "signaling_recipient"
    assert "NVIDIA Container Toolkit" in handoff.error["detail"]
    assert handoff.error["rollback"] == {"complete": True}, handoff.error
    assert inspect(docker_stack, "t-core")["State"]["Running"]
    assert holdings.current_holder(0).requester == "t-core"
