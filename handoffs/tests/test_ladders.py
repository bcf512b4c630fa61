"""Release ladders: ordered steps, each with its own deadline, climbed until the memory proves the
release; reclaim ladders climbed until the source's memory is back."""

from __future__ import annotations

import pytest

from handoffs.models import Phase
from handoffs.tests.conftest import PRIME_LOADED_MIB
from handoffs.tests.fakes import FakeContainers

pytestmark = pytest.mark.django_db


def prime_ladder(prime_url: str, *later: dict, first_deadline: float = 0.2) -> list[dict]:
    first = {
        "http": {"method": "POST", "url": f"{prime_url}/sleep?level=1"},
        "deadline_seconds": first_deadline,
    }
    return [first, *later]


def sleep(prime_url: str, level: int, **step) -> dict:
    return {"http": {"method": "POST", "url": f"{prime_url}/sleep?level={level}"}, **step}


def ladder_of(handoff) -> list[tuple[str, int, str]]:
    steps = handoff.phases.get(name=Phase.WAITING_CUDA_CLEANUP).figures["ladder"]
    return [(step["service"], step["step"], step["outcome"]) for step in steps]


def test_it_climbs_to_the_next_step_when_vllm_sleep_answers_200_and_keeps_its_memory(
    resident, gaia, gpu, hold_gpu, run_handoff, configure_service
):
    prime = gaia["gaia-prime"]
    configure_service("gaia-prime", release=prime_ladder(prime.url, sleep(prime.url, 2)))
    prime.hooks.clear()
    prime.on("/sleep?level=2", gpu.holder(resident.gaia_prime.pid, 0))
    hold_gpu("gaia-core")
    handoff = run_handoff()
    assert handoff.phase == Phase.COMPLETED
    assert [call.path for call in prime.calls] == ["/sleep?level=1", "/sleep?level=2"]
    steps = handoff.phases.get(name=Phase.WAITING_CUDA_CLEANUP).figures["ladder"]
    level_one, level_two = (step for step in steps if step["service"] == "gaia-prime")
    assert (level_one["memory_after_mib"], level_two["memory_after_mib"]) == (PRIME_LOADED_MIB, 0)
    assert level_two["answered_at"] - level_one["answered_at"] >= 0.2  # its deadline, then the next
    reclaim = handoff.phases.get(name=Phase.WAITING_CUDA_CLEANUP).figures["reclaim"]
    assert (reclaim["service"], reclaim["step"], reclaim["action"]) == ("gaia-prime", 2, "http")


def test_it_stops_at_the_first_step_after_which_the_release_is_verified(
    resident, gaia, hold_gpu, run_handoff, configure_service
):
    prime = gaia["gaia-prime"]
    configure_service("gaia-prime", release=prime_ladder(prime.url, sleep(prime.url, 2)))
    hold_gpu("gaia-core")
    handoff = run_handoff()
    assert handoff.phase == Phase.COMPLETED
    assert [call.path for call in prime.calls] == ["/sleep?level=1"]
    assert ladder_of(handoff) == [("gaia-core", 1, "answered"), ("gaia-prime", 1, "answered")]


def test_it_goes_to_the_next_step_at_once_when_a_step_fails(
    resident, gaia, gpu, hold_gpu, run_handoff, configure_service
):
    prime = gaia["gaia-prime"]
    configure_service("gaia-prime", release=prime_ladder(prime.url, sleep(prime.url, 2), first_deadline=30))
    prime.respond("/sleep", status=500, body={"detail": "sleep mode is not enabled"}, times=1)
    hold_gpu("gaia-core")
    handoff = run_handoff()
    assert handoff.phase == Phase.COMPLETED
    release = handoff.phases.get(name=Phase.RELEASING_GPU).figures["ladder"]
    assert [(step["step"], step["outcome"], step.get("status")) for step in release[1:]] == [
        (1, "failed", 500),
        (2, "answered", None),
    ]


def test_it_stops_then_kills_the_container_when_no_call_frees_the_memory(
    resident, gaia, gpu, hold_gpu, run_handoff, configure_service, monkeypatch
):
    containers = FakeContainers()
    containers.hooks["service_kill"] = gpu.holder(resident.gaia_prime.pid, 0)  # a stop that did not end it
    monkeypatch.setattr("handoffs.strategies._containers", lambda: containers)
    prime = gaia["gaia-prime"]
    prime.hooks.clear()
    stop = {"container": "stop", "deadline_seconds": 0.2}
    configure_service("gaia-prime", release=prime_ladder(prime.url, stop, {"container": "kill"}))
    hold_gpu("gaia-core")
    handoff = run_handoff()
    assert handoff.phase == Phase.COMPLETED
    assert containers.kinds() == ["service_stop", "service_kill"]
    assert [step[1] for step in ladder_of(handoff) if step[0] == "gaia-prime"] == [1, 2, 3]


def test_it_fails_the_release_when_the_whole_ladder_of_a_service_fails(
    gaia, hold_gpu, run_handoff, configure_service
):
    core = gaia["gaia-core"]
    configure_service("gaia-core", release=[sleep(core.url, 1, deadline_seconds=1), sleep(core.url, 2)])
    hold_gpu("gaia-core")
    handoff = run_handoff()  # gaia-core has no /sleep: 404 twice
    assert handoff.phase == Phase.FAILED
    assert (handoff.error["phase"], handoff.error["status"]) == (Phase.RELEASING_GPU, 404)
    assert [step["outcome"] for step in handoff.error["ladder"]] == ["failed", "failed"]


def test_it_reclaims_through_the_next_step_until_the_memory_is_back(
    resident, gaia, gpu, hold_gpu, run_handoff, configure_service
):
    """The rollback's reclaim: a wake-up that answers 200 without loading, then the next step."""
    prime = gaia["gaia-prime"]
    prime.hooks.clear()
    prime.on("/sleep", gpu.holder(resident.gaia_prime.pid, 0))
    prime.on("/sleep?level=2", gpu.holder(resident.gaia_prime.pid, PRIME_LOADED_MIB))  # stands for a start
    wake = {"http": {"method": "POST", "url": f"{prime.url}/wake_up"}, "deadline_seconds": 0.2}
    configure_service("gaia-prime", reclaim=[wake, sleep(prime.url, 2)])
    gaia["gaia-study"].respond("/study/gpu-ready", status=503, body={"ok": False, "message": "loading"})
    hold_gpu("gaia-core")
    handoff = run_handoff()
    assert handoff.phase == Phase.FAILED
    assert handoff.error["rollback"] == {"complete": True}
    rollback = handoff.phases.get(name=Phase.ROLLING_BACK).figures["reclaim"]["gaia-prime"]
    assert [step["memory"]["back"] for step in rollback["ladder"]] == [False, True]
    assert rollback["rule"] == "memory_back"


def test_it_gives_each_recipient_step_its_own_deadline(gaia, hold_gpu, run_handoff, configure_service):
    study = gaia["gaia-study"]
    ready = {"http": {"method": "POST", "url": f"{study.url}/study/gpu-ready"}}
    configure_service(
        "gaia-study",
        ready=[{"http": {"method": "POST", "url": f"{study.url}/missing"}, "deadline_seconds": 0.3}, ready],
    )
    hold_gpu("gaia-core")
    handoff = run_handoff()
    assert handoff.phase == Phase.COMPLETED
    figures = handoff.phases.get(name=Phase.SIGNALING_RECIPIENT).figures["gaia-study"]
    assert figures["step"] == 2
