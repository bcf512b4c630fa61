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
