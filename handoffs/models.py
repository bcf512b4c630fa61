"""GPU handoffs as phased, resumable jobs; the rollbacks they left incomplete; the processes seen
holding GPU memory outside every service."""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone

from gaiaorch.jobs import ClaimedJob, StepRecord


class Phase(models.TextChoices):
    INITIATED = "initiated"
    RELEASING_GPU = "releasing_gpu"
    WAITING_CUDA_CLEANUP = "waiting_cuda_cleanup"
    TRANSFERRING_OWNERSHIP = "transferring_ownership"
    SIGNALING_RECIPIENT = "signaling_recipient"
    ROLLING_BACK = "rolling_back"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


FORWARD: list[str] = [
    Phase.INITIATED,
    Phase.RELEASING_GPU,
    Phase.WAITING_CUDA_CLEANUP,
    Phase.TRANSFERRING_OWNERSHIP,
    Phase.SIGNALING_RECIPIENT,
    Phase.COMPLETED,
]
ACTIVE = [*FORWARD[:-1], Phase.ROLLING_BACK]
TERMINAL = [Phase.COMPLETED, Phase.FAILED, Phase.CANCELLED]


class HandoffQuerySet(models.QuerySet):
    def active(self):
        return self.filter(phase__in=ACTIVE)


class Handoff(ClaimedJob):
    """One GPU transfer from a source service to a destination service, driven phase by phase."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    type = models.CharField(max_length=32, help_text="A handoff type configured under handoffs:")
    gpu_index = models.PositiveSmallIntegerField(default=0)
    source = models.CharField(max_length=100)
    destination = models.CharField(max_length=100)
    phase = models.CharField(max_length=32, choices=Phase.choices, default=Phase.INITIATED, db_index=True)
    # Where a rollback ends: failed after an error, cancelled after a cancel request.
    rollback_to = models.CharField(max_length=16, blank=True, default="")
    reason = models.CharField(max_length=500, blank=True)
    timeout_seconds = models.PositiveIntegerField(null=True, blank=True, help_text="Per-phase deadline")
    requested_by = models.CharField(max_length=150)
    cancel_requested = models.BooleanField(default=False)
    cancel_requested_by = models.CharField(max_length=150, blank=True)
    source_lease_id = models.UUIDField(null=True, blank=True)
    destination_lease_id = models.UUIDField(null=True, blank=True)
    fencing_token = models.BigIntegerField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    warnings = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)

    objects = HandoffQuerySet.as_manager()  # type: ignore[misc]  # ClaimedJob.objects is only for the type checker

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # The invariant itself: two processes racing to start a handoff on one GPU cannot both win.
            models.UniqueConstraint(
                fields=["gpu_index"],
                condition=models.Q(phase__in=ACTIVE),
                name="one_active_handoff_per_gpu",
            ),
            models.CheckConstraint(
                condition=models.Q(completed_at__isnull=True) | models.Q(phase__in=TERMINAL),
                name="handoff_completed_only_when_terminal",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.id} ({self.phase})"

    @property
    def progress_pct(self) -> int:
        if self.phase in TERMINAL:
            return 100
        if self.phase == Phase.ROLLING_BACK:
            return 90
        return round(100 * FORWARD.index(self.phase) / (len(FORWARD) - 1))

    def event_data(self, **extra) -> dict:
        return {
            "handoff_id": str(self.id),
            "handoff_type": self.type,
            "phase": self.phase,
            "gpu": self.gpu_index,
            "source": self.source,
            "destination": self.destination,
            **extra,
        }


class HandoffPhase(StepRecord):
    """One phase of one handoff: written before the phase's external call, finished after it."""

    handoff = models.ForeignKey(Handoff, on_delete=models.CASCADE, related_name="phases")

    class Meta(StepRecord.Meta):
        indexes = [models.Index(fields=["handoff", "started_at"])]

    def __str__(self) -> str:
        return f"{self.name}: {self.outcome}"


class Resolution(models.TextChoices):
    RECLAIMED = "reclaimed"  # a later reclaim brought the source's memory back
    ACKNOWLEDGED = "acknowledged"  # an operator took it in hand


class IncompleteRollback(models.Model):
    """A rollback that did not give the source its GPU back: retried by the ticker (its reclaim)
    and reported by /ready until it is reclaimed or an operator acknowledges it."""

    handoff = models.OneToOneField(Handoff, on_delete=models.CASCADE, related_name="incomplete_rollback")
    gpu_index = models.PositiveSmallIntegerField()
    source = models.CharField(max_length=100)
    problems = models.JSONField(default=list)
    retry_reclaim = models.BooleanField(default=True, help_text="Whether the ticker reclaims again")
    attempts = models.PositiveIntegerField(default=0, help_text="Reclaims the ticker tried")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    resolution = models.CharField(max_length=16, choices=Resolution.choices, blank=True, default="")
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.CharField(max_length=150, blank=True)
    resolution_reason = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=(models.Q(resolution="") & models.Q(resolved_at__isnull=True))
                | (~models.Q(resolution="") & models.Q(resolved_at__isnull=False)),
                name="incomplete_rollback_resolved_with_a_resolution",
            )
        ]

    def __str__(self) -> str:
        return f"rollback of {self.handoff_id} ({self.resolution or 'open'})"

    @property
    def open(self) -> bool:
        return not self.resolution

    def as_dict(self) -> dict:
        return {
            "handoff_id": str(self.handoff_id),
            "gpu": self.gpu_index,
            "source": self.source,
            "problems": self.problems,
            "retry_reclaim": self.retry_reclaim,
            "attempts": self.attempts,
            "next_attempt_at": self.next_attempt_at,
            "last_error": self.last_error,
            "created_at": self.created_at,
            "resolution": self.resolution,
            "resolved_at": self.resolved_at,
            "resolved_by": self.resolved_by,
            "resolution_reason": self.resolution_reason,
        }


class GpuTenant(models.Model):
    """A process seen holding GPU memory outside every configured service, while it is there.

    A row per (GPU, pid) makes its event once per appearance, from however many tickers."""

    gpu_index = models.PositiveSmallIntegerField()
    pid = models.PositiveIntegerField()
    command = models.CharField(max_length=200, blank=True)
    used_mib = models.PositiveIntegerField(help_text="The most it was seen holding")
    first_seen_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["gpu_index", "pid"], name="one_tenant_row_per_gpu_pid")
        ]

    def __str__(self) -> str:
        return f"GPU {self.gpu_index}: pid {self.pid} ({self.used_mib} MiB)"
