"""The append-only event log: one row per state change anywhere in the system."""

from __future__ import annotations

from django.db import models


class Severity(models.TextChoices):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


class AppendOnlyError(RuntimeError):
    pass


class Event(models.Model):
    """An immutable record; ids increase monotonically and become visible in id order."""

    id = models.BigAutoField(primary_key=True)
    type = models.CharField(max_length=64, db_index=True, help_text="Dotted type, e.g. lease.granted")
    severity = models.CharField(max_length=8, choices=Severity.choices, default=Severity.INFO, db_index=True)
    title = models.CharField(max_length=200)
    message = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)
    actor = models.CharField(max_length=150, help_text="Frozen name of the user or service that acted")
    subject_kind = models.CharField(max_length=32, blank=True, db_index=True)
    subject_id = models.CharField(max_length=64, blank=True, db_index=True)
    correlation_id = models.CharField(max_length=64, blank=True, db_index=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"#{self.id} {self.type}: {self.title}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyError("events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("events are append-only")


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # gave up after the webhook's max_attempts


class WebhookDelivery(models.Model):
    """The outbox: one row per event and webhook, written in the event's own transaction."""

    event = models.ForeignKey(Event, on_delete=models.PROTECT, related_name="webhook_deliveries")
    webhook = models.CharField(max_length=200, help_text="Name of the webhook in notifications.webhooks")
    url = models.CharField(
        max_length=500, help_text="Scheme, host and port of the webhook's URL (its path may be a secret)"
    )
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    attempt_log = models.JSONField(default=list, blank=True, help_text="One entry per attempt")
    created_at = models.DateTimeField()
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "webhook deliveries"
        constraints = [
            models.UniqueConstraint(fields=["event", "webhook"], name="one_delivery_per_event_and_webhook"),
            models.CheckConstraint(
                condition=~models.Q(status=DeliveryStatus.PENDING) | models.Q(next_attempt_at__isnull=False),
                name="pending_delivery_has_next_attempt",
            ),
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(status=DeliveryStatus.PENDING),
                name="webhook_delivery_due",
            )
        ]

    def __str__(self) -> str:
        return f"event #{self.event_id} → {self.webhook} ({self.status})"


class OracleFallbackBurst(models.Model):
    """Identical Oracle-fallback notices inside the dedup window, folded into one row."""

    fallback_model = models.CharField(max_length=200)
    original_role = models.CharField(max_length=100)
    first_event = models.ForeignKey(Event, on_delete=models.PROTECT, related_name="+")
    summary_event = models.ForeignKey(
        Event, on_delete=models.PROTECT, related_name="+", null=True, blank=True
    )
    repeats = models.PositiveIntegerField(default=0, help_text="Notices after the first, inside the window")
    last_reason = models.TextField(blank=True)
    opened_at = models.DateTimeField()
    window_ends_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["fallback_model", "original_role"],
                condition=models.Q(closed_at__isnull=True),
                name="one_open_oracle_burst_per_model_and_role",
            )
        ]
        indexes = [
            models.Index(
                fields=["window_ends_at"],
                condition=models.Q(closed_at__isnull=True),
                name="oracle_burst_open",
            )
        ]

    def __str__(self) -> str:
        return f"{self.fallback_model} for {self.original_role} x{self.count}"

    @property
    def count(self) -> int:
        return self.repeats + 1
