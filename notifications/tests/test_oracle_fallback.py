import threading
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import IntegrityError, close_old_connections, transaction
from django.utils import timezone

from notifications.models import Event, OracleFallbackBurst
from notifications.services import ORACLE_FALLBACK, close_expired_oracle_bursts, report_oracle_fallback

NOTICE = {"fallback_model": "groq/llama-3.3-70b", "original_role": "prime", "reason": "prime is asleep"}


def notices() -> list[Event]:
    return list(Event.objects.filter(type=ORACLE_FALLBACK).order_by("id"))


def end_window_now() -> None:
    OracleFallbackBurst.objects.update(window_ends_at=timezone.now() - timedelta(seconds=1))


def test_it_refuses_a_notice_without_its_required_fields(core_client):
    response = core_client.post("/notify/oracle-fallback", {"reason": "no model"}, format="json")
    assert response.status_code == 400
    assert set(response.json()["fields"]) == {"fallback_model", "original_role"}
    assert not notices()


def test_it_refuses_an_anonymous_notice(anonymous_client):
    assert anonymous_client.post("/notify/oracle-fallback", NOTICE, format="json").status_code == 401


def test_it_stores_a_notice_as_an_event(core_client):
    response = core_client.post(
        "/notify/oracle-fallback", {**NOTICE, "timestamp": "2026-11-26T10:00:00Z"}, format="json"
    )
    assert response.status_code == 200
    [event] = notices()
    body = response.json()
    assert (body["success"], body["deduplicated"], body["count"], body["event_id"]) == (
        True,
        False,
        1,
        event.id,
    )
    assert event.severity == "warning" and event.actor == "gaia-core"
    assert event.data["fallback_model"] == "groq/llama-3.3-70b"
    assert event.data["reported_at"] == event.data["timestamp"] == "2026-11-26T10:00:00+00:00"
    assert "groq/llama-3.3-70b" in event.title and "prime" in event.title


def test_it_folds_identical_notices_inside_the_window_into_one(core_client):
    answers = [core_client.post("/notify/oracle-fallback", NOTICE, format="json").json() for _ in range(4)]
    assert len(notices()) == 1
    assert [(a["deduplicated"], a["count"]) for a in answers] == [(False, 1), (True, 2), (True, 3), (True, 4)]


def test_it_sends_one_summary_with_the_count_when_the_window_ends(db):
    for _ in range(3):
        report_oracle_fallback(**NOTICE)
    assert close_expired_oracle_bursts() == 0  # the window is still open
    end_window_now()
    assert close_expired_oracle_bursts() == 1
    first, summary = notices()
    assert (summary.data["count"], summary.data["summary"], summary.data["first_event_id"]) == (
        3,
        True,
        first.id,
    )
    assert "3 times" in summary.title
    assert close_expired_oracle_bursts() == 0


def test_it_closes_a_lone_notice_without_a_summary(db):
    report_oracle_fallback(**NOTICE)
    end_window_now()
    assert close_expired_oracle_bursts() == 1
    assert len(notices()) == 1


def test_it_reports_again_after_the_window_and_summarises_the_old_burst(db):
    report_oracle_fallback(**NOTICE)
    report_oracle_fallback(**NOTICE)
    end_window_now()
    again = report_oracle_fallback(**NOTICE)  # before the ticker closed the old burst
    assert not again.deduplicated
    assert [(e.data["count"], e.data["summary"]) for e in notices()] == [(1, False), (2, True), (1, False)]


def test_it_keeps_separate_bursts_per_model_and_role(db):
    report_oracle_fallback(**NOTICE)
    report_oracle_fallback(**{**NOTICE, "original_role": "lite"})
    report_oracle_fallback(**{**NOTICE, "fallback_model": "openai/gpt-4o"})
    assert len(notices()) == 3


def test_it_sends_every_notice_when_the_window_is_zero(db, notifications_config):
    notifications_config(oracle_dedup_window_seconds=0)
    for _ in range(3):
        report_oracle_fallback(**NOTICE)
    assert len(notices()) == 3


def test_it_allows_only_one_open_burst_per_model_and_role_in_the_database(db):
    report_oracle_fallback(**NOTICE)
    burst = OracleFallbackBurst.objects.get()
    with pytest.raises(IntegrityError), transaction.atomic():
        OracleFallbackBurst.objects.create(
            fallback_model=burst.fallback_model,
            original_role=burst.original_role,
            first_event=burst.first_event,
            opened_at=burst.opened_at,
            window_ends_at=burst.window_ends_at,
        )


def test_it_reports_from_the_command_line(db, capsys):
    call_command("notify", "oracle-fallback", "groq/llama", "prime", "--reason", "manual test")
    assert '"count": 1' in capsys.readouterr().out
    assert notices()[0].data["reason"] == "manual test"


@pytest.mark.slow
@pytest.mark.postgres
def test_it_sends_one_notice_when_many_race_on_postgresql(transactional_db):
    barrier = threading.Barrier(8)
    reports = []

    def report():
        barrier.wait()
        try:
            reports.append(report_oracle_fallback(**NOTICE))
        finally:
            close_old_connections()

    threads = [threading.Thread(target=report) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(notices()) == 1
    assert sorted(r.burst.count for r in reports) == list(range(1, 9))
    assert [r.deduplicated for r in reports].count(False) == 1
