"""Shared pieces of long-running, resumable jobs (container operations, handoffs).

A job row is *claimed* by one worker through a conditional UPDATE; the claimant renews
`heartbeat_at` while it works. A job whose heartbeat is older than the stale limit belongs to a
dead worker and may be claimed again by anyone (recovery). Steps/phases are rows of their own.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta

from django.db import models
from django.utils import timezone


def worker_id() -> str:
    # Computed per call: django-q2 forks workers, and each fork needs its own identity.
    return f"{socket.gethostname()}:{os.getpid()}"


class ClaimedJob(models.Model):
    """Mixin for job rows that one worker at a time drives."""

    claimed_by = models.CharField(max_length=100, blank=True, default="")
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True


def claim(model: type[ClaimedJob], pk, stale_after: float, **still) -> bool:
    """Take a job if nobody alive holds it. `still` narrows to the states it may be claimed in.

    The conditional UPDATE is the lock: of two workers racing, exactly one matches the row.
    """
    now = timezone.now()
    unclaimed = models.Q(claimed_by="") | models.Q(heartbeat_at__lt=now - timedelta(seconds=stale_after))
    updated = model.objects.filter(unclaimed, pk=pk, **still).update(claimed_by=worker_id(), heartbeat_at=now)
    return updated == 1


def beat(model: type[ClaimedJob], pk) -> bool:
    """Renew the claim; False means another worker took the job over and this one must stop."""
    return model.objects.filter(pk=pk, claimed_by=worker_id()).update(heartbeat_at=timezone.now()) == 1


def release_claim(model: type[ClaimedJob], pk) -> None:
    model.objects.filter(pk=pk, claimed_by=worker_id()).update(claimed_by="", heartbeat_at=None)


def stale(model: type[ClaimedJob], stale_after: float, **active) -> models.QuerySet:
    """Active jobs whose worker stopped beating (or that no worker ever claimed)."""
    limit = timezone.now() - timedelta(seconds=stale_after)
    return model.objects.filter(
        models.Q(heartbeat_at__lt=limit) | models.Q(heartbeat_at__isnull=True), **active
    )


class StepOutcome(models.TextChoices):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


class StepRecord(models.Model):
    """One step or phase of a job: when it ran, how it ended, what was measured."""

    name = models.CharField(max_length=64)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=StepOutcome.choices, default=StepOutcome.RUNNING)
    detail = models.TextField(blank=True)
    figures = models.JSONField(default=dict, blank=True)

    class Meta:
        abstract = True
        ordering = ["started_at", "id"]

    def finish(self, outcome: str, detail: str = "", **figures) -> None:
        self.finished_at = timezone.now()
        self.outcome = outcome
        self.detail = detail
        self.figures = {**self.figures, **figures}
        self.save(update_fields=["finished_at", "outcome", "detail", "figures"])

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "outcome": self.outcome,
            "detail": self.detail,
            "figures": self.figures,
        }
