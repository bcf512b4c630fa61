"""Holding a job: the claim, the writes made under it, and the heartbeat that keeps it."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from django.db import DatabaseError, connection, connections, transaction
from django.db.models import Q
from django.utils import timezone

from gaiaorch.jobs.kinds import JobKind, JobPolicy
from gaiaorch.jobs.records import ClaimedJob, StepRecord

logger = logging.getLogger(__name__)

HEARTBEAT_JOIN_SECONDS = 5.0


def worker_id() -> str:
    # Computed per call: django-q2 forks workers, and each fork needs its own identity.
    return f"{socket.gethostname()}:{os.getpid()}"


class ClaimLost(Exception):
    """Another worker took the job over (this one stalled past the stale limit): stop touching it."""


class CancelRequested(Exception):
    """Someone asked the job to stop; its app decides how it ends (a handoff rolls back)."""


def beat(model: type[ClaimedJob], pk: Any, worker: str | None = None) -> bool:
    """Renew the claim; False means another worker took the job over and this one must stop."""
    renewed = model.objects.filter(pk=pk, claimed_by=worker or worker_id()).update(
        heartbeat_at=timezone.now()
    )
    return renewed == 1


class Claim:
    """This worker's hold on one job row.

    Every write made through it is a conditional UPDATE on still holding the claim (and renews the
    heartbeat); once the claim is gone every later write raises ClaimLost and changes nothing, so a
    worker that stalled past the stale limit stops instead of fighting the one that took over.
    """

    def __init__(self, kind: JobKind, pk: Any, policy: JobPolicy, worker: str):
        self.kind = kind
        self.pk = pk
        self.policy = policy
        self.worker = worker
        self._lost = threading.Event()

    @classmethod
    def take(cls, kind: JobKind, pk: Any) -> Claim | None:
        """Claim an active job nobody alive holds; None when someone does or the job has ended."""
        policy = kind.policy()
        worker, now = worker_id(), timezone.now()
        free = Q(claimed_by="") | Q(heartbeat_at__lt=now - timedelta(seconds=policy.stale_after_seconds))
        with transaction.atomic():
            # The conditional UPDATE is the lock: of two workers racing, exactly one matches the row.
            taken = kind.model.objects.filter(free, kind.active, pk=pk).update(
                claimed_by=worker, heartbeat_at=now
            )
            if taken != 1:
                return None
            kind.close_running_steps(pk, "interrupted: the worker driving it stopped")
        return cls(kind, pk, policy, worker)

    # ---- writes under the claim

    def update(self, **fields: Any) -> None:
        """Change job fields (and renew the heartbeat) only while this worker holds the claim."""
        changes = {"heartbeat_at": timezone.now(), **fields}
        if self.kind.model.objects.filter(pk=self.pk, claimed_by=self.worker).update(**changes) != 1:
            self._lost.set()
            raise ClaimLost(self.pk)

    def begin_step(self, name: str, *, job: dict[str, Any] | None = None, **step_fields: Any) -> StepRecord:
        """Write a step's row before its external call, with `job` field changes in one transaction."""
        with transaction.atomic():
            self.update(**(job or {}))
            return self.kind.step_model.objects.create(
                **{self.kind.step_job_field: self.pk}, name=name, **step_fields
            )

    def finish_step(
        self,
        record: StepRecord,
        outcome: str,
        detail: str = "",
        *,
        job: dict[str, Any] | None = None,
        **figures,
    ) -> None:
        """Record how a step ended, after its external call, with `job` field changes."""
        with transaction.atomic():
            self.update(**(job or {}))
            record.finish(outcome, detail, **figures)

    def release(self) -> None:
        """Give the job back (it ended, or this worker stops); a no-op once it is no longer ours."""
        self.kind.model.objects.filter(pk=self.pk, claimed_by=self.worker).update(
            claimed_by="", heartbeat_at=None
        )

    # ---- where a running job may stop

    def check(self) -> None:
        """ClaimLost once the heartbeat (or a write) found the claim gone."""
        if self._lost.is_set():
            raise ClaimLost(self.pk)

    def checkpoint(self, cancellable: bool = False) -> None:
        """check(), and CancelRequested once someone asked a cancellable job to stop."""
        self.check()
        stop = self.kind.cancel_requested
        if cancellable and stop is not None and self.kind.model.objects.filter(stop, pk=self.pk).exists():
            raise CancelRequested(self.pk)

    # ---- the heartbeat

    @contextmanager
    def kept_alive(self) -> Iterator[Claim]:
        """Renew the claim from a side thread while the body runs: it may block in Docker or HTTP."""
        stop = threading.Event()
        thread = threading.Thread(
            target=self._beat_until, args=(stop,), name=f"{self.kind.name}-{self.pk}-heartbeat", daemon=True
        )
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join(timeout=HEARTBEAT_JOIN_SECONDS)

    def _beat_until(self, stop: threading.Event) -> None:
        try:
            while not stop.wait(self.policy.beat_every_seconds):
                try:
                    self._wait_at_most_one_beat_for_the_write_lock()
                    if not beat(self.kind.model, self.pk, self.worker):
                        self._lost.set()
                        return
                except DatabaseError:  # a busy database: try again at the next beat
                    logger.warning("heartbeat of %s %s failed", self.kind.name, self.pk, exc_info=True)
        finally:
            connections.close_all()  # this thread's own connection

    def _wait_at_most_one_beat_for_the_write_lock(self) -> None:
        # SQLite has one write lock: a beat queued behind a long writer is worth less than the next
        # beat, so it gives up within half a beat instead of the usual 30 s busy timeout.
        if connection.vendor == "sqlite":
            with connection.cursor() as cursor:
                cursor.execute(f"PRAGMA busy_timeout = {int(self.policy.beat_every_seconds * 500)}")
