"""Docker reality (one row per configured service), stack operations with their steps, swaps."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

from gaiaorch.jobs import ClaimedJob, StepRecord


class State(models.TextChoices):
    RUNNING = "running"
    EXITED = "exited"
    CREATED = "created"
    RESTARTING = "restarting"
    PAUSED = "paused"
    DEAD = "dead"
    REMOVING = "removing"
    ABSENT = "absent"
    UNKNOWN = "unknown"  # Docker is unreachable: we do not know, and say so


class Container(models.Model):
    """What Docker runs for one configured service, as last observed."""

    service = models.CharField(max_length=100, unique=True)
    stack = models.CharField(max_length=16, db_index=True)
    role = models.CharField(max_length=100, blank=True)
    container_id = models.CharField(max_length=64, blank=True)
    name = models.CharField(max_length=200, blank=True)
    image = models.CharField(max_length=300, blank=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.UNKNOWN)
    health = models.CharField(
        max_length=16, blank=True, help_text="Docker health: healthy/unhealthy/starting"
    )
    started_at = models.DateTimeField(null=True, blank=True)
    device_requests = models.JSONField(default=list, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True, help_text="Last time Docker was asked")
    changed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["stack", "service"]

    def __str__(self) -> str:
        return f"{self.service} ({self.state})"

    def observed(self) -> dict:
        return {
            "container_id": self.container_id,
            "name": self.name,
            "image": self.image,
            "state": self.state,
            "health": self.health,
            "started_at": self.started_at,
            "device_requests": self.device_requests,
        }


class DockerStatus(models.Model):
    """Singleton (pk=1): whether the Docker Engine answered the last time anyone asked."""

    available = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "Docker status"

    def __str__(self) -> str:
        return "reachable" if self.available else f"unreachable: {self.error}"


class OperationKind(models.TextChoices):
    LIVE_STOP = "live_stop"
    LIVE_START = "live_start"
    CANDIDATE_START = "candidate_start"
    CANDIDATE_STOP = "candidate_stop"
    SWAP = "swap"
    SERVICE_START = "service_start"
    SERVICE_STOP = "service_stop"
    SERVICE_RESTART = "service_restart"
    SERVICE_KILL = "service_kill"


class OperationStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @classmethod
    def active(cls) -> list[str]:
        return [cls.PENDING, cls.RUNNING]


class Operation(ClaimedJob):
    """One stack operation, driven by one worker at a time."""

    kind = models.CharField(max_length=32, choices=OperationKind.choices)
    status = models.CharField(max_length=16, choices=OperationStatus.choices, default=OperationStatus.PENDING)
    # Every operation shares one scope, so the unique constraint below admits one active at a time.
    scope = models.CharField(max_length=16, default="stacks", editable=False)
    services = models.JSONField(
        default=list, help_text="Configured services this operation touches, in order"
    )
    params = models.JSONField(default=dict, blank=True)
    requested_by = models.CharField(max_length=150)
    error = models.TextField(blank=True)
    lease_id = models.CharField(max_length=64, blank=True, help_text="GPU lease acquired for this operation")
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    enqueued_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    deadline_at = models.DateTimeField(
        null=True, blank=True, help_text="No step starts after this (sum of its services' timeouts)"
    )

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["scope"],
                condition=Q(status__in=["pending", "running"]),
                name="one_active_container_operation",
            ),
            models.CheckConstraint(
                condition=Q(status__in=["succeeded", "failed"], finished_at__isnull=False)
                | Q(status__in=["pending", "running"], finished_at__isnull=True),
                name="operation_finished_iff_terminal",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.id} {self.kind} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in OperationStatus.active()


class OperationStep(StepRecord):
    operation = models.ForeignKey(Operation, on_delete=models.CASCADE, related_name="steps")
    service = models.CharField(max_length=100, blank=True)

    class Meta(StepRecord.Meta):
        pass


class SwapTarget(models.TextChoices):
    LIVE = "live"
    CANDIDATE = "candidate"


class Swap(models.Model):
    """Where traffic for a live service's network name goes; no row means the live service."""

    service = models.CharField(max_length=100, unique=True, help_text="The live service")
    candidate = models.CharField(max_length=100)
    target = models.CharField(max_length=16, choices=SwapTarget.choices, default=SwapTarget.LIVE)
    changed_at = models.DateTimeField(default=timezone.now)
    changed_by = models.CharField(max_length=150)
    operation = models.ForeignKey(Operation, null=True, blank=True, on_delete=models.SET_NULL)

    def __str__(self) -> str:
        return f"{self.service} -> {self.target}"
