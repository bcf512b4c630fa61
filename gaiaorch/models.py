"""Rows of the coordinator itself (not of one app): the worker's heartbeat."""

from __future__ import annotations

from django.db import models


class WorkerHeartbeat(models.Model):
    """Singleton (pk=1): when the ticker last enqueued a heartbeat task and when a worker ran one."""

    enqueued_at = models.DateTimeField(null=True, blank=True)
    consumed_at = models.DateTimeField(null=True, blank=True)
    consumed_by = models.CharField(max_length=100, blank=True, help_text="host:pid of the worker")

    def __str__(self) -> str:
        return f"worker heartbeat consumed at {self.consumed_at}"
