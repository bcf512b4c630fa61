"""The worker heartbeat: the ticker enqueues a tiny task, a worker stamps it; /ready reads its age."""

from __future__ import annotations

import os
import socket

from django.utils import timezone

from gaiaorch import queues
from gaiaorch.models import WorkerHeartbeat

HEARTBEAT_TASK = "gaiaorch.tasks.stamp_worker_heartbeat"


def enqueue_worker_heartbeat() -> None:
    """Ticker job: hand the worker a tiny task; its stamp proves the worker consumes tasks."""
    WorkerHeartbeat.objects.update_or_create(pk=1, defaults={"enqueued_at": timezone.now()})
    # save=False: no result row per beat, the heartbeat row is the record.
    queues.enqueue(HEARTBEAT_TASK, save=False, group="heartbeat")


def stamp_worker_heartbeat() -> None:
    worker = f"{socket.gethostname()}:{os.getpid()}"
    WorkerHeartbeat.objects.update_or_create(
        pk=1, defaults={"consumed_at": timezone.now(), "consumed_by": worker}
    )


def worker_heartbeat_age() -> float | None:
    """Seconds since a worker last ran the heartbeat task; None if none ever did."""
    consumed = WorkerHeartbeat.objects.filter(pk=1).values_list("consumed_at", flat=True).first()
    return (timezone.now() - consumed).total_seconds() if consumed else None
