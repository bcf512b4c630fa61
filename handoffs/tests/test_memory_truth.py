"""A GPU changes hands only when its memory is really free: the leak cases, on the fake backend
with real processes (attribution reads their command lines in /proc, as on a GPU box).

GPU 0 has 24576 MiB, 615 reserved by the driver; gaia-prime holds 11000 MiB; gaia-study declares
16384 MiB, so it needs 16896 free (512 headroom).
"""

from __future__ import annotations

import logging

import pytest

from handoffs.models import Phase
from handoffs.tests.conftest import PRIME_LOADED_MIB
from handoffs.tests.fakes import GpuProcess
from leases import holdings
from notifications.models import Event

pytestmark = pytest.mark.django_db


def cleanup_of(handoff):
    return handoff.phases.get(name=Phase.WAITING_CUDA_CLEANUP)


def test_it_hands_the_gpu_over_once_prime_holds_nothing_and_free_memory_settled(
    resident, gaia, hold_gpu, run_handoff
):
    hold_gpu("gaia-core")
    handoff = run_handoff()
    assert handoff.phase == Phase.COMPLETED
    cleanup = cleanup_of(handoff)
    figures = cleanup.figures
    assert (figures["rule"], figures["attribution"]) == ("released", "available")
    assert figures["source_mib"] == {"gaia-core": 0, "gaia-prime": 0}
    assert figures["residual_mib"] == {"gaia-core": 512, "gaia-prime": 512}
    assert (figures["free_mib"], figures["required_free_mib"]) == (24576 - 615, 16896)
    assert figures["settle"]["settled"] and figures["settle"]["span_ms"] >= 40
    assert figures["held_before_mib"] == {"gaia-core": 0, "gaia-prime": PRIME_LOADED_MIB}
    assert figures["reclaim"]["service"] == "gaia-prime" and figures["reclaim"]["seconds"] >= 0.04
    assert "released: gaia-core holds 0 MiB, gaia-prime holds 0 MiB on GPU 0" in cleanup.detail
    assert gaia["gaia-study"].called("/study/gpu-ready")


def test_it_refuses_a_full_leak_on_a_fresh_database_whatever_gpu_status_saw_before(
    resident, gaia, hold_gpu, run_handoff, anonymous_client
):
    """Leak case 1: the status page once took Prime's resident memory for an idle baseline."""
    assert anonymous_client.get("/gpu/status").status_code == 200  # nobody holds a lease yet
    hold_gpu("gaia-core")
    gaia["gaia-prime"].hooks.clear()  # its sleep answers 200 and frees nothing
    handoff = run_handoff()
    assert handoff.phase == Phase.FAILED
    error = handoff.error
    assert (error["phase"], error["refusal"]) == ("waiting_cuda_cleanup", "source_holds_memory")
    assert error["over_residual"] == {"gaia-prime": PRIME_LOADED_MIB}
    assert "gaia-prime still holds 11000 MiB on GPU 0 (allowance 512 MiB)" in error["detail"]
    assert not gaia["gaia-study"].called("/study/gpu-ready")
    assert holdings.current_holder(0).requester == "gaia-core"


def test_it_refuses_a_leak_that_leaves_room_for_the_recipient(resident, gaia, gpu, hold_gpu, run_handoff):
    """Leak case 2: "free ≥ need" alone passed a source that kept all its memory."""
    hold_gpu("gaia-core")
    gpu.hold(resident.gaia_prime.pid, 4000)  # 19961 MiB free: Study would fit beside it
    gaia["gaia-prime"].hooks.clear()
    handoff = run_handoff()
    assert handoff.phase == Phase.FAILED
    assert handoff.error["refusal"] == "source_holds_memory"
    assert (
        "gaia-study would fit beside it, but prime_to_study allows no co-residence" in handoff.error["detail"]
    )
    assert not gaia["gaia-study"].called("/study/gpu-ready")


def test_it_lets_both_stay_resident_where_the_handoff_type_allows_it(
    resident, gaia, gpu, hold_gpu, run_handoff, configure
):
    configure(
        "handoffs", prime_to_study={"source": "gaia-core", "destination": "gaia-study", "co_residence": True}
    )
    hold_gpu("gaia-core")
    gpu.hold(resident.gaia_prime.pid, 4000)
    gaia["gaia-prime"].hooks.clear()
    handoff = run_handoff()
    assert handoff.phase == Phase.COMPLETED
    cleanup = cleanup_of(handoff)
    assert (cleanup.figures["rule"], cleanup.figures["both_resident"]) == ("co_resident", True)
    event = Event.objects.get(type="handoff.phase_finished", data__phase=Phase.WAITING_CUDA_CLEANUP)
    assert "gaia-prime keeps 4000 MiB on GPU 0" in event.message and "both stay resident" in event.message


def test_it_refuses_a_partial_release(resident, gaia, gpu, hold_gpu, run_handoff):
    hold_gpu("gaia-core")
    gaia["gaia-prime"].hooks.clear()
    gaia["gaia-prime"].on("/sleep", gpu.holder(resident.gaia_prime.pid, PRIME_LOADED_MIB // 2))
    handoff = run_handoff()
    assert handoff.phase == Phase.FAILED
    assert handoff.error["over_residual"] == {"gaia-prime": PRIME_LOADED_MIB // 2}


def test_it_refuses_when_another_process_takes_the_room_and_names_it(
    resident, gaia, gpu, hold_gpu, run_handoff
):
    hold_gpu("gaia-core")
    stranger = resident.stranger

    def prime_frees_and_a_stranger_grabs() -> None:
        gpu.hold(resident.gaia_prime.pid, 0)
        gpu.hold(stranger.pid, 20000)

    gaia["gaia-prime"].on("/sleep", prime_frees_and_a_stranger_grabs)
    handoff = run_handoff()
    assert handoff.phase == Phase.FAILED
    error = handoff.error
    assert error["refusal"] == "not_enough_free"
    assert f"19.5 GiB held by pid {stranger.pid} `" in error["detail"]
    assert stranger.label in error["detail"] and "outside any service" in error["detail"]
    assert [holder["pid"] for holder in error["holders"]] == [stranger.pid]


def test_it_falls_back_to_the_aggregate_rule_and_says_it_is_the_weaker_one(gaia, gpu, hold_gpu, run_handoff):
    """NVML lists no process (another PID namespace): nobody can tell who keeps what."""
    hold_gpu("gaia-core")
    handoff = run_handoff()
    assert handoff.phase == Phase.COMPLETED
    figures = cleanup_of(handoff).figures
    assert (figures["rule"], figures["weaker"], figures["attribution"]) == ("aggregate", True, "unavailable")
    assert "belong to no listed process" in figures["attribution_reason"]


def test_it_cannot_prove_a_release_without_attribution_nor_a_declared_need(
    gaia, gpu, hold_gpu, run_handoff, configure_service
):
    configure_service("gaia-study", vram_mib=None)
    hold_gpu("gaia-core")
    handoff = run_handoff()
    assert handoff.phase == Phase.FAILED
    assert handoff.error["refusal"] == "unverifiable"
    assert handoff.error["samples"] == 1  # no point waiting: nothing would change the answer


def test_it_logs_a_refused_release_with_its_handoff_id_and_figures(
    resident, gaia, hold_gpu, run_handoff, caplog
):
    hold_gpu("gaia-core")
    gaia["gaia-prime"].hooks.clear()
    with caplog.at_level(logging.WARNING, logger="handoffs"):
        handoff = run_handoff()
    lines = [record for record in caplog.records if str(handoff.id) in record.getMessage()]
    refused = next(record for record in lines if "waiting_cuda_cleanup failed" in record.getMessage())
    assert (
        refused.levelno == logging.WARNING and '"over_residual":{"gaia-prime":11000}' in refused.getMessage()
    )
    assert any("rolling back" in record.getMessage() for record in lines)
    assert any(record.getMessage().endswith("rolled back: GPU returned to gaia-core") for record in lines)


def test_it_records_no_negative_phase_duration(resident, hold_gpu, run_handoff):
    hold_gpu("gaia-core")
    handoff = run_handoff()
    for record in handoff.phases.all():
        assert record.finished_at >= record.started_at, record.name


def test_it_names_a_grabbing_pid_even_when_it_started_before_the_handoff(
    resident, gpu, hold_gpu, run_handoff
):
    stranger = GpuProcess("python train.py")
    try:
        hold_gpu("gaia-core")
        gpu.hold(stranger.pid, 12000)
        handoff = run_handoff()
    finally:
        stranger.stop()
    assert handoff.phase == Phase.FAILED
    assert (
        f"11.7 GiB held by pid {stranger.pid} `python -c import time; time.sleep(600) python train.py`"
        in (handoff.error["detail"])
    )


def test_it_checks_the_memory_held_before_in_the_rollback_of_a_failed_release(
    resident, gaia, hold_gpu, run_handoff
):
    hold_gpu("gaia-core")
    gaia["gaia-core"].respond("/gpu/release", status=500, body={"ok": False, "message": "generating"})
    handoff = run_handoff()
    assert handoff.error["held_before_mib"] == {"gaia-core": 0, "gaia-prime": PRIME_LOADED_MIB}
    assert handoff.error["rollback"] == {"complete": True}
    reclaim = handoff.phases.get(name=Phase.ROLLING_BACK).figures["reclaim"]
    assert reclaim["gaia-prime"]["rule"] == "memory_back"
