"""Rows of the coordinator itself (not of one app): API tokens and the worker's heartbeat."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class ApiToken(models.Model):
    """An account's API token, stored as the SHA-256 of its key: the key is shown once, when made.

    A leaked database or backup then holds no usable credential. Keys are 160 random bits, so
    a plain digest (no salt, no slow hash) cannot be reversed by guessing.
    """

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_token")
    digest = models.CharField(max_length=64, unique=True, help_text="SHA-256 of the key, hex")
    prefix = models.CharField(max_length=8, help_text="The key's first characters, to tell keys apart")
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.prefix}… of {self.user}"


class WorkerHeartbeat(models.Model):
    """Singleton (pk=1): when the ticker last enqueued a heartbeat task and when a worker ran one."""

    enqueued_at = models.DateTimeField(null=True, blank=True)
    consumed_at = models.DateTimeField(null=True, blank=True)
    consumed_by = models.CharField(max_length=100, blank=True, help_text="host:pid of the worker")

    def __str__(self) -> str:
        return f"worker heartbeat consumed at {self.consumed_at}"
