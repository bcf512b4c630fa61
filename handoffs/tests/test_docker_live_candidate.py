"""live⇄candidate against the real Docker Engine, through the containers app's real operations.

The busybox stacks come from the containers app's fixtures. VRAM follows the containers: the
fake GPU lists each running GPU container's main process (its real pid, so attribution finds the
service through the container's cgroup), and drops it once Docker says the container exited.
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
    gpu = FakeGpu(tmp_path / "fake-gpu.json", used_mib=0)
    gpu.hold(0, 0)  # a process list from now on (NVML v2): attribution is available
    return gpu


@pytest.fixture
def gpu_follows_docker(handoff_stack, inspect, docker_stack):
    """`loaded[service] = MiB`: while that service's container runs, its main process holds it."""
    loaded: dict[str, int] = {}
    stop = threading.Event()

    def follow() -> None:
        pids: dict[str, int] = {}
        while not stop.wait(0.05):
            for service, mib in list(loaded.items()):
                state = (inspect(docker_stack, service) or {}).get("State", {})
                if state.get("Running"):
                    pids[service] = state["Pid"]
                    handoff_stack.hold(state["Pid"], mib)
                elif service in pids:
                    handoff_stack.hold(pids.pop(service), 0)

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    yield loaded
    stop.set()
    follower.join(timeout=5)


def wait_until_held(gpu: FakeGpu, mib: int) -> None:
    for _ in range(200):
        if gpu.used_mib == mib:
            return
        threading.Event().wait(0.05)
    raise AssertionError(f"the fake GPU never showed {mib} MiB held")


def test_it_moves_the_gpu_between_the_real_stacks_and_back(
    handoff_stack, gpu_follows_docker, docker_stack, inspect, monkeypatch
):
    from containers import engine
    from containers import services as containers

    monkeypatch.setattr(engine, "gpu_device_requests", lambda gpu: [])

    containers.request_stack_operation("live_start", actor="test")
    leases.acquire(requester="t-core", reason="prime inference", actor="t-core")
    gpu_follows_docker["t-core"] = LOADED_MIB
    wait_until_held(handoff_stack, LOADED_MIB)

    there = services.start(type="live_to_candidate", actor="olivia")
    tasks.run_handoff(str(there.id))
    there.refresh_from_db()
    assert there.phase == Phase.COMPLETED, there.error
    assert not inspect(docker_stack, "t-core")["State"]["Running"]
    assert inspect(docker_stack, "t-core-candidate")["State"]["Running"]
    assert holdings.current_holder(0).requester == "t-core-candidate"
    cleanup = there.phases.get(name="waiting_cuda_cleanup").figures
    assert (cleanup["vram_before_mib"], cleanup["used_mib"], cleanup["rule"]) == (LOADED_MIB, 0, "released")
    assert there.phases.get(name="releasing_gpu").figures["held_before_mib"]["t-core"] == LOADED_MIB

    gpu_follows_docker["t-core-candidate"] = LOADED_MIB  # the candidate loaded its models
    wait_until_held(handoff_stack, LOADED_MIB)
    back = services.start(type="candidate_to_live", actor="olivia")
    tasks.run_handoff(str(back.id))
    back.refresh_from_db()
    assert back.phase == Phase.COMPLETED, back.error
    assert inspect(docker_stack, "t-core")["State"]["Running"]
    assert not inspect(docker_stack, "t-core-candidate")["State"]["Running"]
    assert holdings.current_holder(0).requester == "t-core"


def test_it_restarts_the_live_services_when_the_candidate_cannot_get_the_gpu(
    handoff_stack, gpu_follows_docker, docker_stack, inspect
):
    from containers import services as containers

    containers.request_stack_operation("live_start", actor="test")
    leases.acquire(requester="t-core", reason="prime inference", actor="t-core")
    gpu_follows_docker["t-core"] = LOADED_MIB
    wait_until_held(handoff_stack, LOADED_MIB)

    handoff = services.start(type="live_to_candidate", actor="olivia")
    tasks.run_handoff(str(handoff.id))
    handoff.refresh_from_db()
    assert handoff.phase == Phase.FAILED
    assert handoff.error["phase"] == "signaling_recipient"
    assert "NVIDIA Container Toolkit" in handoff.error["detail"]
    assert handoff.error["rollback"] == {"complete": True}, handoff.error
    assert inspect(docker_stack, "t-core")["State"]["Running"]
    assert holdings.current_holder(0).requester == "t-core"
