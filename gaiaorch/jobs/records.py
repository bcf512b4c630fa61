"""The rows every claimed job has: the job's claim fields, and one row per step it ran."""

from __future__ import annotations

from typing import ClassVar, Self

from django.db import models
from django.utils import timezone


class ClaimedJob(models.Model):
    """Mixin for job rows that one worker at a time drives (see gaiaorch.jobs).

    A concrete job model also has `enqueued_at` (when it was last handed to the worker pool) and,
    when its policy bounds the attempts, `attempts`.
    """

    claimed_by = models.CharField(max_length=100, blank=True, default="")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # For the type checker: an abstract model declares no manager, each concrete one gets one.
    objects: ClassVar[models.Manager[Self]]

    class Meta:
        abstract = True


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
    objects: ClassVar[models.Manager[Self]]  # for the type checker, as on ClaimedJob

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
