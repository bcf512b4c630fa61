"""GPUs and who owns them: exclusive leases with a fair queue and fencing tokens."""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q


class Gpu(models.Model):
    """One physical GPU. Its row is the lock that serialises every lease decision about it."""

    index = models.PositiveSmallIntegerField(unique=True)
    uuid = models.CharField(max_length=96, blank=True)
    name = models.CharField(max_length=128, blank=True)
    total_mib = models.PositiveIntegerField(null=True, blank=True)
    present = models.BooleanField(default=True, help_text="False when telemetry no longer reports it")
    next_fencing_token = models.PositiveBigIntegerField(
        default=1, help_text="Given to the next grant, then bumped; never goes back, so never reused"
    )
    next_arrival = models.PositiveBigIntegerField(default=1, help_text="Queue arrival counter")
    resident = models.CharField(
        max_length=100, blank=True, help_text="The configured resident this GPU was last seated for"
    )
    on_loan = models.BooleanField(
        default=False, help_text="The resident handed it over and takes it back when the borrowers are done"
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["index"]
        verbose_name = "GPU"
        verbose_name_plural = "GPUs"

    def __str__(self) -> str:
        return f"GPU {self.index}"


class LeaseStatus(models.TextChoices):
    WAITING = "waiting"
    ACTIVE = "active"
    RELEASED = "released"
    EXPIRED = "expired"
    REVOKED = "revoked"
    CANCELLED = "cancelled"

    @classmethod
    def live(cls) -> list[str]:
        return [cls.WAITING, cls.ACTIVE]

    @classmethod
    def terminal(cls) -> list[str]:
        return [cls.RELEASED, cls.EXPIRED, cls.REVOKED, cls.CANCELLED]


class LeaseQuerySet(models.QuerySet):
    def live(self):
        return self.filter(status__in=LeaseStatus.live())

    def waiting(self):
        return self.filter(status=LeaseStatus.WAITING)

    def active(self):
        return self.filter(status=LeaseStatus.ACTIVE)

    def in_grant_order(self):
        # Higher priority first, then arrival (a per-GPU counter, so ties are impossible).
        return self.order_by("-priority", "arrival")


class Lease(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    gpu = models.ForeignKey(Gpu, on_delete=models.PROTECT, related_name="leases")
    requester = models.CharField(max_length=100, db_index=True)
    reason = models.CharField(max_length=500, blank=True)
    priority = models.SmallIntegerField(default=0)
    status = models.CharField(max_length=16, choices=LeaseStatus.choices, default=LeaseStatus.WAITING)
    arrival = models.PositiveBigIntegerField(help_text="Position in the GPU's arrival order")
    fencing_token = models.PositiveBigIntegerField(null=True, blank=True)
    ttl_seconds = models.PositiveIntegerField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    memory_mib = models.PositiveIntegerField(null=True, blank=True, help_text="Free VRAM needed for a grant")
    waiting_for = models.CharField(max_length=300, blank=True, help_text="Why the head of the queue waits")
    requested_at = models.DateTimeField()
    granted_at = models.DateTimeField(null=True, blank=True)
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    claim_by = models.DateTimeField(
        null=True, blank=True, help_text="A grant nobody has claimed yet is passed on at this time"
    )
    adoption = models.PositiveIntegerField(
        default=0, help_text="Bumped by every sign of life of the owner; a wait withdraws only its own"
    )
    standing = models.BooleanField(default=False, help_text="The resident's standing lease")
    ended_at = models.DateTimeField(null=True, blank=True)
    ended_by = models.CharField(max_length=150, blank=True)
    end_reason = models.CharField(max_length=500, blank=True)

    objects = LeaseQuerySet.as_manager()

    class Meta:
        ordering = ["-requested_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["gpu"], condition=Q(status="active"), name="leases_one_active_lease_per_gpu"
            ),
            # Re-acquire returns the existing entry; a requester never holds and waits at once.
            models.UniqueConstraint(
                fields=["gpu", "requester"],
                condition=Q(status__in=["waiting", "active"]),
                name="leases_one_live_lease_per_requester_and_gpu",
            ),
            models.UniqueConstraint(fields=["gpu", "fencing_token"], name="leases_fencing_token_once"),
            models.UniqueConstraint(fields=["gpu", "arrival"], name="leases_arrival_once"),
            models.CheckConstraint(
                condition=~Q(status="active") | Q(fencing_token__isnull=False, granted_at__isnull=False),
                name="leases_active_has_token",
            ),
            models.CheckConstraint(
                condition=Q(ttl_seconds__isnull=True) | Q(ttl_seconds__gt=0), name="leases_ttl_positive"
            ),
            models.CheckConstraint(
                condition=Q(status__in=["waiting", "active"]) | Q(ended_at__isnull=False),
                name="leases_ended_has_time",
            ),
            # The resident never heartbeats: its standing lease lasts until it is handed over.
            models.CheckConstraint(
                condition=Q(standing=False) | Q(ttl_seconds__isnull=True), name="leases_standing_has_no_ttl"
            ),
        ]
        indexes = [models.Index(fields=["gpu", "status", "-priority", "arrival"], name="leases_queue_idx")]

    def __str__(self) -> str:
        return f"{self.requester} on {self.gpu} ({self.status})"
