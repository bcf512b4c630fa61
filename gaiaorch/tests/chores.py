"""A job kind of the tests' own (chores), so the runner is tested apart from any app.

Its tables live in an isolated model registry (no migration) and are created for each test by
the `chores` fixture, on a committed database: the heartbeat thread and racing workers use
connections of their own, which must see the rows.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import models
from django.db.models import Q
from django.test.utils import isolate_apps
from django.utils import timezone

from gaiaorch import jobs

with isolate_apps("gaiaorch"):

    class Chore(jobs.ClaimedJob):
        state = models.CharField(max_length=16, default="pending")
        attempts = models.PositiveSmallIntegerField(default=1)
        enqueued_at = models.DateTimeField(null=True)
        cancel_requested = models.BooleanField(default=False)

        class Meta:
            app_label = "gaiaorch"

    class ChoreStep(jobs.StepRecord):
        chore = models.ForeignKey(Chore, on_delete=models.CASCADE, related_name="steps")

        class Meta(jobs.StepRecord.Meta):
            app_label = "gaiaorch"


TABLES = (Chore, ChoreStep)
LONG_AGO = timedelta(minutes=5)


class Chores(jobs.JobKind):
    """Records what the runner asked of it instead of enqueuing or writing events."""

    name = "tests.chore"
    model = Chore
    step_model = ChoreStep
    step_job_field = "chore_id"
    active = Q(state__in=["pending", "running"])
    cancel_requested = Q(cancel_requested=True)

    def __init__(self, policy: jobs.JobPolicy):
        self._policy = policy
        self.enqueued: list[Any] = []
        self.requeued_jobs: list[tuple[Any, str]] = []

    def policy(self) -> jobs.JobPolicy:
        return self._policy

    def enqueue(self, pk: Any) -> None:
        self.enqueued.append(pk)

    def claimed(self, claim: jobs.Claim) -> None:
        claim.update(state="running")

    def requeued(self, job: Chore, silence: str) -> None:
        self.requeued_jobs.append((job.claimed_by, silence))

    def abandoned(self, job: Chore, silence: str) -> None:
        Chore.objects.filter(pk=job.pk).update(state="abandoned", claimed_by="", heartbeat_at=None)


def policy(**overrides: Any) -> jobs.JobPolicy:
    values = {
        "beat_every_seconds": 0.1,
        "stale_after_seconds": 60,
        "recovery_interval_seconds": 5,
        "max_attempts": 2,
        **overrides,
    }
    return jobs.JobPolicy(**values)


def abandoned_chore(**fields: Any) -> Chore:
    """A chore whose worker stopped beating five minutes ago, in the middle of a step."""
    values = {
        "state": "running",
        "claimed_by": "dead-host:4242",
        "heartbeat_at": timezone.now() - LONG_AGO,
        "enqueued_at": timezone.now() - LONG_AGO,
        **fields,
    }
    chore = Chore.objects.create(**values)
    ChoreStep.objects.create(chore=chore, name="sweep")
    return chore
