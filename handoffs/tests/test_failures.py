import pytest

from handoffs import services, strategies
from handoffs.models import Phase
from handoffs.tests.conftest import PRIME_LOADED_MIB
from leases import holdings

pytestmark = pytest.mark.django_db


def ended_with(handoff, *names):
    return [record.name for record in handoff.phases.order_by("started_at", "id")][-len(names) :] == list(
        names
    )


def test_it_rolls_back_when_core_hangs_on_release(gaia, hold_gpu, run_handoff):
    core_lease = hold_gpu("gaia-core")
    gaia["gaia-core"].respond("/gpu/release", hang=True)
    handoff = run_handoff()
    assert handoff.phase == Phase.FAILED
    assert handoff.error["phase"] == "releasing_gpu"
    assert handoff.error["status"] is None
    assert handoff.error["timeout_seconds"] == 1
    assert "did not answer" in handoff.error["detail"]
    assert handoff.error["rollback"] == {"complete": True}
    assert ended_with(handoff, "releasing_gpu", "rolling_back", "failed")
    assert holdings.current_holder(0).lease_id == core_lease.id
    assert gaia["gaia-core"].called("/gpu/reclaim")
    assert gaia["gaia-prime"].called("/wake_up")


def test_it_carries_core_s_status_and_body_when_release_answers_500(gaia, hold_gpu, run_handoff):
    hold_gpu("gaia-core")
    gaia["gaia-core"].respond("/gpu/release", status=500, body={"ok": False, "message": "model busy"})
    handoff = run_handoff()
    assert handoff.phase == Phase.FAILED
    assert handoff.error["status"] == 500
    assert "model busy" in handoff.error["body"]
    assert handoff.error["service"] == "gaia-core"
    assert not gaia["gaia-prime"].called("/sleep?level=1")


def test_it_fails_with_measured_figures_when_vram_never_drops(gaia, hold_gpu, run_handoff):
    hold_gpu("gaia-core")
    gaia["gaia-prime"].hooks.clear()  # sleep answers ok but frees nothing, like vLLM once did
    handoff = run_handoff()
    assert handoff.phase == Phase.FAILED
    error = handoff.error
    assert error["phase"] == "waiting_cuda_cleanup"
    assert error["used_mib"] == PRIME_LOADED_MIB
    assert error["free_mib"] == 24576 - PRIME_LOADED_MIB
    assert (error["need_mib"], error["required_free_mib"]) == (16384, 16384 + 512)
    assert (error["refusal"], error["attribution"]) == ("not_enough_free", "unavailable")
    assert "13576 MiB free on GPU 0, 16896 MiB needed" in error["detail"]
    assert error["samples"] > 1
    assert holdings.current_holder(0).requester == "gaia-core"
    assert not gaia["gaia-study"].called("/study/gpu-ready")


def test_it_accepts_enough_free_vram_without_attribution_as_the_weaker_rule(gaia, gpu, hold_gpu, run_handoff):
    hold_gpu("gaia-core")
    gaia["gaia-prime"].hooks.clear()
    gaia["gaia-prime"].on("/sleep", gpu.setter(7000))  # 17576 MiB free ≥ Study's 16384 + 512 headroom
    handoff = run_handoff()
    assert handoff.phase == Phase.COMPLETED
    cleanup = handoff.phases.get(name="waiting_cuda_cleanup")
    assert (cleanup.figures["rule"], cleanup.figures["weaker"]) == ("aggregate", True)
    assert "the aggregate rule, the weaker one" in cleanup.detail


def test_it_rolls_back_and_returns_the_lease_when_study_never_acknowledges(gaia, hold_gpu, run_handoff):
    core_lease = hold_gpu("gaia-core")
    gaia["gaia-study"].respond("/study/gpu-ready", status=503, body={"ok": False, "message": "loading"})
    handoff = run_handoff()
    assert handoff.phase == Phase.FAILED
    assert handoff.error["code"] == "recipient_unacknowledged"
    assert handoff.error["attempts"] > 1
    assert (handoff.error["service"], handoff.error["status"]) == ("gaia-study", 503)
    assert "loading" in handoff.error["body"]
    holder = holdings.current_holder(0)
    assert holder.requester == "gaia-core"
    assert holder.fencing_token > handoff.fencing_token > core_lease.fencing_token
    assert gaia["gaia-study"].called("/study/gpu-release")
    reclaim = gaia["gaia-core"].called("/gpu/reclaim")[0]
    assert reclaim.body["fencing_token"] == holder.fencing_token


def test_it_completes_with_a_warning_when_configured_to(gaia, hold_gpu, run_handoff, configure):
    hold_gpu("gaia-core")
    configure("handoffs", on_recipient_unacknowledged="complete_with_warning")
    gaia["gaia-study"].respond("/study/gpu-ready", hang=True)
    handoff = run_handoff()
    assert handoff.phase == Phase.COMPLETED
    assert handoff.warnings[0]["code"] == "recipient_unacknowledged"
    assert holdings.current_holder(0).requester == "gaia-study"
    assert handoff.phases.get(name="signaling_recipient").outcome == "failed"


def test_it_says_the_rollback_is_incomplete_when_core_cannot_reclaim(gaia, hold_gpu, run_handoff):
    hold_gpu("gaia-core")
    gaia["gaia-prime"].hooks.clear()
    gaia["gaia-core"].respond("/gpu/reclaim", status=500, body={"ok": False, "message": "CUDA OOM"})
    handoff = run_handoff()
    assert handoff.phase == Phase.FAILED
    rollback = handoff.error["rollback"]
    assert rollback["complete"] is False
    assert rollback["problems"][0]["step"] == "reclaim"
    assert rollback["problems"][0]["status"] == 500
    assert "rollback incomplete" in handoff.error["detail"]
    assert handoff.phases.get(name="rolling_back").outcome == "failed"
    assert holdings.current_holder(0).requester == "gaia-core"


def test_it_fails_the_rollback_when_core_stays_unhealthy(gaia, hold_gpu, run_handoff):
    hold_gpu("gaia-core")
    gaia["gaia-prime"].hooks.clear()
    gaia["gaia-core"].respond("/health", status=503)
    handoff = run_handoff()
    assert handoff.error["rollback"]["problems"][0]["step"] == "health"


def test_it_asks_a_busy_core_again_until_it_releases(gaia, hold_gpu, run_handoff):
    hold_gpu("gaia-core")
    busy = {"ok": False, "message": "generating", "state": "busy"}
    gaia["gaia-core"].respond("/gpu/release", status=409, body=busy, times=2)
    handoff = run_handoff()
    assert handoff.phase == Phase.COMPLETED
    assert len(gaia["gaia-core"].called("/gpu/release")) == 3
    (core_step, _) = handoff.phases.get(name="releasing_gpu").figures["ladder"]
    assert (core_step["service"], core_step["attempts"]) == ("gaia-core", 3)


def test_it_gives_up_on_a_core_busy_past_the_deadline(gaia, hold_gpu, run_handoff):
    hold_gpu("gaia-core")
    gaia["gaia-core"].respond("/gpu/release", status=409, body={"ok": False, "state": "busy"})
    handoff = run_handoff()
    assert handoff.phase == Phase.FAILED
    assert handoff.error["status"] == 409
    assert handoff.error["attempts"] > 2


@pytest.mark.parametrize(
    ("service", "path", "phase"),
    [
        ("gaia-core", "/gpu/release", "releasing_gpu"),
        ("gaia-study", "/study/gpu-ready", "signaling_recipient"),
    ],
)
def test_it_says_what_the_callee_answered_in_the_error(gaia, hold_gpu, run_handoff, service, path, phase):
    """docs/handoffs.md: the error carries service, url, status and body, and says it in words."""
    hold_gpu("gaia-core")
    gaia[service].respond(path, status=500, body={"ok": False, "message": "CUDA out of memory"})
    handoff = run_handoff()
    error = handoff.error
    assert (error["phase"], error["service"], error["status"]) == (phase, service, 500)
    assert error["url"].endswith(path) and "CUDA out of memory" in error["body"]
    assert "CUDA out of memory" in services.status(handoff)["error"]  # the seed's error sentence


def test_it_bounds_the_callee_answer_it_keeps(gaia, hold_gpu, run_handoff):
    hold_gpu("gaia-core")
    gaia["gaia-core"].respond("/gpu/release", status=500, body={"message": "x" * 10_000})
    error = run_handoff().error
    assert len(error["body"]) == strategies.BODY_LIMIT
    assert len(error["detail"]) < strategies.BODY_LIMIT


@pytest.mark.parametrize(
    "answer",
    [
        {"success": False, "message": "no model loaded"},  # the seed's gaia-core
        {"ok": False, "message": "no model loaded", "state": "error"},  # v0.9's
    ],
    ids=["seed", "v0.9"],
)
def test_it_takes_a_gaia_answer_that_says_it_failed_as_a_failure(gaia, hold_gpu, run_handoff, answer):
    hold_gpu("gaia-core")
    gaia["gaia-core"].respond("/gpu/release", status=200, body=answer)
    handoff = run_handoff()
    assert handoff.phase == Phase.FAILED
    error = handoff.error
    assert (error["phase"], error["status"]) == ("releasing_gpu", 200)
    assert "answered 200 but said it failed" in error["detail"] and "no model loaded" in error["body"]
    assert not gaia["gaia-prime"].called("/sleep?level=1")


def test_it_accepts_the_seed_answer_of_a_release(gaia, hold_gpu, run_handoff):
    hold_gpu("gaia-core")
    seed = {"success": True, "released_models": ["prime"], "message": "GPU released"}
    gaia["gaia-core"].respond("/gpu/release", status=200, body=seed)
    assert run_handoff().phase == Phase.COMPLETED


def test_it_tells_the_configured_notice_and_keeps_a_failed_one_out_of_the_outcome(
    gaia, hold_gpu, run_handoff
):
    core = gaia["gaia-core"]  # stack_config tells gaia-core's sleep loop, as v0.9's orchestrator did
    core.respond("/sleep/study-handoff", status=500, body={"detail": "sleep loop down"})
    hold_gpu("gaia-core")
    handoff = run_handoff()
    assert handoff.phase == Phase.COMPLETED
    (told,) = core.called("/sleep/study-handoff")
    assert told.body == {"direction": "prime_to_study", "handoff_id": str(handoff.id)}
    completed = handoff.phases.get(name=Phase.COMPLETED)
    assert "answered 500" in completed.figures["notified"]["failed"]
