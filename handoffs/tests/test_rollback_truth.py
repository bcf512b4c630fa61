"""A rollback is verified by memory: the source is back when its memory is back. One that is not
is a critical event, an ERROR line and a /ready problem, retried by the ticker with backoff until
it works or an operator acknowledges it."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.utils import timezone

from gaiaorch import ticker
from handoffs import services
from handoffs.models import IncompleteRollback, Phase
from handoffs.tests.conftest import PRIME_LOADED_MIB
from notifications.models import Event

pytestmark = pytest.mark.django_db


@pytest.fixture
def prime_wakes_empty(resident, gaia, gpu, hold_gpu):
    """Study never acknowledges, so the handoff rolls back; Prime's wake-up answers 200 and loads
    nothing (until a test lets it)."""
    gaia["gaia-prime"].hooks.clear()
    gaia["gaia-prime"].on("/sleep", gpu.holder(resident.gaia_prime.pid, 0))
    gaia["gaia-study"].respond("/study/gpu-ready", status=503, body={"ok": False, "message": "loading"})
    hold_gpu("gaia-core")
    return resident


def due_now(handoff) -> None:
    IncompleteRollback.objects.filter(handoff=handoff).update(next_attempt_at=timezone.now())


def rollbacks_check(client) -> tuple[int, dict]:
    response = client.get("/ready")
    return response.status_code, response.json()["checks"]["rollbacks"]


def test_it_calls_a_rollback_incomplete_while_prime_answers_but_holds_nothing(
    prime_wakes_empty, run_handoff, caplog, anonymous_client
):
    with caplog.at_level(logging.ERROR, logger="handoffs"):
        handoff = run_handoff()
    assert handoff.phase == Phase.FAILED
    rollback = handoff.error["rollback"]
    assert rollback["complete"] is False
    (problem,) = rollback["problems"]
    assert (problem["step"], problem["code"]) == ("reclaim", "memory_not_back")
    assert "gaia-prime answered its reclaim but holds 0 MiB on GPU 0" in problem["detail"]
    assert handoff.phases.get(name=Phase.ROLLING_BACK).figures["health"] == {"healthy": True}  # not enough
    event = Event.objects.get(type="handoff.rollback_incomplete")
    assert (event.severity, event.data["handoff_id"]) == ("critical", str(handoff.id))
    assert any(r.levelno == logging.ERROR and str(handoff.id) in r.getMessage() for r in caplog.records)
    status, check = rollbacks_check(anonymous_client)
    assert status == 503 and check["ok"] is False
    assert f"handoff {handoff.id} (prime_to_study) left gaia-core without its GPU memory" in check["detail"]
    problems = anonymous_client.get("/status").json()["problems"]
    assert any(str(handoff.id) in problem for problem in problems)


def test_it_reclaims_again_from_the_ticker_until_the_memory_is_back(
    prime_wakes_empty, gaia, gpu, run_handoff, anonymous_client
):
    handoff = run_handoff()
    row = IncompleteRollback.objects.get(handoff=handoff)
    assert row.retry_reclaim and row.next_attempt_at > timezone.now()
    assert services.retry_reclaims() == []  # not due yet
    due_now(handoff)
    assert services.retry_reclaims() == []  # due, and still failing
    row.refresh_from_db()
    assert row.attempts == 1 and "holds 0 MiB" in row.last_error
    backoff = (row.next_attempt_at - row.last_attempt_at).total_seconds()
    assert 3.5 < backoff <= 4.5  # twice the base (2 s) after the first failed retry
    gaia["gaia-prime"].on("/wake_up", gpu.holder(prime_wakes_empty.gaia_prime.pid, PRIME_LOADED_MIB))
    due_now(handoff)
    assert services.retry_reclaims() == [handoff.id]
    row.refresh_from_db()
    assert (row.resolution, row.resolved_by) == ("reclaimed", "ticker")
    assert Event.objects.filter(type="handoff.rollback_reclaimed", subject_id=str(handoff.id)).exists()
    assert rollbacks_check(anonymous_client)[1]["ok"] is True


def test_it_does_not_reclaim_while_another_handoff_runs_or_the_gpu_moved_on(
    prime_wakes_empty, gaia, run_handoff
):
    handoff = run_handoff()
    wake_ups = len(gaia["gaia-prime"].called("/wake_up"))
    services.start(type="prime_to_study", actor="olivia")  # gaia-core holds the GPU again: allowed
    due_now(handoff)
    assert services.retry_reclaims() == []
    assert len(gaia["gaia-prime"].called("/wake_up")) == wake_ups
    row = IncompleteRollback.objects.get(handoff=handoff)
    assert row.attempts == 0 and "a handoff is running" in row.last_error


def test_it_stops_retrying_once_an_operator_acknowledges(prime_wakes_empty, gaia, run_handoff, admin_client):
    handoff = run_handoff()
    page = f"/admin/dashboard/action/acknowledge-rollback?handoff_id={handoff.id}"
    assert b"left gaia-core without its GPU memory" in admin_client.get(page).content
    refused = admin_client.post(page, {"handoff_id": str(handoff.id), "reason": ""})
    assert refused.status_code == 200 and IncompleteRollback.objects.get(handoff=handoff).open
    admin_client.post(page, {"handoff_id": str(handoff.id), "reason": "Prime restarted by hand"})
    row = IncompleteRollback.objects.get(handoff=handoff)
    assert (row.resolution, row.resolved_by, row.resolution_reason) == (
        "acknowledged",
        "admin",
        "Prime restarted by hand",
    )
    due_now(handoff)
    wake_ups = len(gaia["gaia-prime"].called("/wake_up"))
    assert services.retry_reclaims() == []
    assert len(gaia["gaia-prime"].called("/wake_up")) == wake_ups
    event = Event.objects.get(type="handoff.rollback_acknowledged")
    assert (event.actor, event.message) == ("admin", "Prime restarted by hand")


def test_it_retries_from_a_ticker_thread_of_its_own():
    assert "handoffs.reclaims" in ticker.FOLLOWERS
    assert "handoffs.tenants" in ticker.PERIODIC


def test_it_keeps_a_complete_rollback_off_the_retry_list(resident, gaia, hold_gpu, run_handoff):
    gaia["gaia-study"].respond("/study/gpu-ready", status=503, body={"ok": False, "message": "loading"})
    hold_gpu("gaia-core")
    handoff = run_handoff()
    assert handoff.error["rollback"] == {"complete": True}
    reclaim = handoff.phases.get(name=Phase.ROLLING_BACK).figures["reclaim"]
    assert reclaim["gaia-prime"]["rule"] == "memory_back"
    assert not IncompleteRollback.objects.exists()
    assert timezone.now() - handoff.completed_at < timedelta(seconds=30)
