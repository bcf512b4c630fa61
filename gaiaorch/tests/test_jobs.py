"""The claimed-job runner: claims, the heartbeat, writes under a claim, cancel checks, recovery."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from gaiaorch import jobs, ticker
from gaiaorch.jobs import claims
from gaiaorch.tests.chores import TABLES, Chore, Chores, ChoreStep, abandoned_chore, policy


@pytest.fixture
def chores(transactional_db):
    with connection.schema_editor() as editor:
        for table in TABLES:
            editor.create_model(table)
    yield
    with connection.schema_editor() as editor:
        for table in reversed(TABLES):
            editor.delete_model(table)


def other_worker_takes(chore: Chore) -> None:
    Chore.objects.filter(pk=chore.pk).update(claimed_by="other-host:2", heartbeat_at=timezone.now())


# ---- claiming


@pytest.mark.slow
@pytest.mark.postgres
def test_it_lets_exactly_one_of_several_racing_workers_claim_a_job(chores, monkeypatch):
    kind = Chores(policy())
    chore = Chore.objects.create()
    monkeypatch.setattr(claims, "worker_id", lambda: f"racer:{threading.get_ident()}")
    racers = 8
    at_once = threading.Barrier(racers, timeout=10)
    won: list[str] = []

    def race() -> None:
        try:
            at_once.wait()
            claim = jobs.Claim.take(kind, chore.pk)
            if claim is not None:
                won.append(claim.worker)
        finally:
            connection.close()

    threads = [threading.Thread(target=race) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert len(won) == 1, won
    assert Chore.objects.get(pk=chore.pk).claimed_by == won[0]


def test_it_refuses_a_claim_while_the_holder_beats_and_grants_it_once_the_holder_is_silent(chores):
    kind = Chores(policy(stale_after_seconds=60))
    chore = Chore.objects.create(state="running", claimed_by="alive:1", heartbeat_at=timezone.now())
    assert jobs.Claim.take(kind, chore.pk) is None

    Chore.objects.filter(pk=chore.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=2))
    assert jobs.Claim.take(kind, chore.pk) is not None
    assert Chore.objects.get(pk=chore.pk).claimed_by == jobs.worker_id()


def test_it_closes_the_steps_a_dead_worker_left_running_when_it_claims(chores):
    chore = abandoned_chore()

    claim = jobs.Claim.take(Chores(policy()), chore.pk)

    assert claim is not None
    step = chore.steps.get()
    assert (step.outcome, step.detail) == ("failed", "interrupted: the worker driving it stopped")
    assert step.finished_at is not None


def test_it_does_not_claim_a_job_that_has_ended(chores):
    chore = Chore.objects.create(state="done")
    assert jobs.Claim.take(Chores(policy()), chore.pk) is None
    assert jobs.drive(Chores(policy()), chore.pk, lambda claim: pytest.fail("ran an ended job")) is False


# ---- writes under the claim


def test_it_stops_every_write_once_the_claim_is_lost(chores):
    chore = Chore.objects.create()
    claim = jobs.Claim.take(Chores(policy()), chore.pk)
    record = claim.begin_step("sweep")
    other_worker_takes(chore)

    with pytest.raises(jobs.ClaimLost):
        claim.update(state="done")
    with pytest.raises(jobs.ClaimLost):
        claim.finish_step(record, jobs.StepOutcome.SUCCEEDED, "swept")
    with pytest.raises(jobs.ClaimLost):
        claim.begin_step("mop")
    with pytest.raises(jobs.ClaimLost):
        claim.check()
    claim.release()

    chore.refresh_from_db()
    assert (chore.state, chore.claimed_by) == ("pending", "other-host:2")
    assert [(step.name, step.outcome) for step in chore.steps.all()] == [("sweep", "running")]


def test_it_drives_a_job_and_gives_the_claim_back(chores):
    kind = Chores(policy())
    chore = Chore.objects.create()

    def sweep(claim: jobs.Claim) -> None:
        record = claim.begin_step("sweep", job={"state": "running"})
        claim.finish_step(record, jobs.StepOutcome.SUCCEEDED, "swept", rooms=3, job={"state": "done"})

    assert jobs.drive(kind, chore.pk, sweep) is True

    chore.refresh_from_db()
    assert (chore.state, chore.claimed_by, chore.heartbeat_at) == ("done", "", None)
    step = chore.steps.get()
    assert (step.name, step.outcome, step.detail, step.figures) == (
        "sweep",
        "succeeded",
        "swept",
        {"rooms": 3},
    )


def test_it_stops_driving_a_job_whose_claim_another_worker_took(chores, caplog):
    kind = Chores(policy())
    chore = Chore.objects.create()
    reached: list[str] = []

    def sweep(claim: jobs.Claim) -> None:
        claim.begin_step("sweep")
        other_worker_takes(chore)
        reached.append("taken over")
        claim.begin_step("mop")
        reached.append("mopped")

    assert jobs.drive(kind, chore.pk, sweep) is True

    assert reached == ["taken over"]
    assert Chore.objects.get(pk=chore.pk).claimed_by == "other-host:2"
    assert [step.name for step in ChoreStep.objects.all()] == ["sweep"]
    assert "taken over by another worker" in caplog.text


# ---- the heartbeat


def test_it_keeps_the_claim_of_a_step_that_blocks_far_past_the_stale_limit(chores):
    kind = Chores(policy(beat_every_seconds=0.1, stale_after_seconds=0.5))
    chore = Chore.objects.create()
    seen: dict[str, object] = {}

    def long_step(claim: jobs.Claim) -> None:
        record = claim.begin_step("long call")
        time.sleep(1.5)  # blocked in one call (Docker, HTTP): no checkpoint, no write
        seen["recovered"] = jobs.recover(kind)
        seen["second claim"] = jobs.Claim.take(kind, chore.pk)
        claim.finish_step(record, jobs.StepOutcome.SUCCEEDED)

    jobs.drive(kind, chore.pk, long_step)

    assert seen == {"recovered": [], "second claim": None}
    assert kind.enqueued == []
    assert ChoreStep.objects.get().outcome == "succeeded"


def test_it_loses_a_blocked_step_to_recovery_without_a_heartbeat(chores):
    """The control for the test above: the same step under a claim nobody renews goes stale."""
    kind = Chores(policy(beat_every_seconds=0.1, stale_after_seconds=0.5))
    chore = Chore.objects.create()
    claim = jobs.Claim.take(kind, chore.pk)
    claim.begin_step("long call")
    time.sleep(1.0)

    assert jobs.recover(kind) == [chore.pk]
    with pytest.raises(jobs.ClaimLost):
        claim.update(state="done")


def test_it_notices_from_the_heartbeat_that_the_claim_was_taken_while_the_job_waits(chores):
    kind = Chores(policy(beat_every_seconds=0.1))
    chore = Chore.objects.create()
    waited: list[float] = []

    def wait_for_something(claim: jobs.Claim) -> None:
        other_worker_takes(chore)  # no write of this worker notices; only the heartbeat can
        began = time.monotonic()
        try:
            while time.monotonic() - began < 10:
                claim.checkpoint()
                time.sleep(0.05)
        finally:
            waited.append(time.monotonic() - began)

    jobs.drive(kind, chore.pk, wait_for_something)

    assert waited[0] < 2, f"the lost claim was noticed only after {waited[0]:.1f} s"
    assert Chore.objects.get(pk=chore.pk).claimed_by == "other-host:2"


# ---- cancel checks


def test_it_stops_a_cancellable_job_at_its_next_checkpoint(chores):
    chore = Chore.objects.create()
    claim = jobs.Claim.take(Chores(policy()), chore.pk)
    claim.checkpoint(cancellable=True)

    Chore.objects.filter(pk=chore.pk).update(cancel_requested=True)

    claim.checkpoint(cancellable=False)  # a rollback, say, runs to its end
    with pytest.raises(jobs.CancelRequested):
        claim.checkpoint(cancellable=True)


# ---- recovery


def test_it_hands_a_stale_job_to_a_worker_again_and_closes_its_interrupted_step(chores):
    kind = Chores(policy(stale_after_seconds=60, max_attempts=2))
    chore = abandoned_chore(attempts=1)

    assert jobs.recover(kind) == [chore.pk]

    chore.refresh_from_db()
    assert kind.enqueued == [chore.pk]
    assert (chore.claimed_by, chore.heartbeat_at, chore.attempts) == ("", None, 2)
    assert timezone.now() - chore.enqueued_at < timedelta(seconds=5)
    step = chore.steps.get()
    assert step.outcome == "failed"
    assert step.detail == "interrupted: no worker has driven it for 60 s (worker stopped or restarted)"
    assert kind.requeued_jobs == [("dead-host:4242", step.detail.removeprefix("interrupted: "))]
    assert jobs.recover(kind) == []  # just handed over: a second ticker leaves it alone


def test_it_abandons_a_job_that_used_up_its_attempts(chores):
    kind = Chores(policy(max_attempts=2))
    chore = abandoned_chore(attempts=2)

    assert jobs.recover(kind) == [chore.pk]

    assert Chore.objects.get(pk=chore.pk).state == "abandoned"
    assert kind.enqueued == []


def test_it_resumes_a_job_until_it_ends_when_the_policy_sets_no_bound(chores):
    kind = Chores(policy(max_attempts=None))
    chore = abandoned_chore(attempts=1)

    for _ in range(3):
        assert jobs.recover(kind) == [chore.pk]
        Chore.objects.filter(pk=chore.pk).update(enqueued_at=timezone.now() - timedelta(minutes=5))

    assert kind.enqueued == [chore.pk] * 3
    assert Chore.objects.get(pk=chore.pk).attempts == 1  # not counted: nothing bounds it


def test_it_leaves_a_job_alone_while_its_worker_beats(chores):
    kind = Chores(policy())
    chore = abandoned_chore(heartbeat_at=timezone.now())

    assert jobs.recover(kind) == []
    assert Chore.objects.get(pk=chore.pk).claimed_by == "dead-host:4242"
    assert chore.steps.get().outcome == "running"


def test_it_runs_recovery_from_the_ticker_on_the_policy_cadence(chores, monkeypatch):
    monkeypatch.setattr(ticker, "PERIODIC", {})
    kind = Chores(policy(recovery_interval_seconds=7))
    chore = abandoned_chore()

    jobs.schedule_recovery(kind)
    job = ticker.PERIODIC["tests.chore.recover"]
    ticker.run_due(now=0.0)

    assert job.seconds() == 7
    assert kind.enqueued == [chore.pk]
