"""Driving a claimed job to its end, and recovering the jobs whose worker died."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from gaiaorch import ticker
from gaiaorch.jobs.claims import Claim, ClaimLost
from gaiaorch.jobs.kinds import JobKind, JobPolicy

logger = logging.getLogger(__name__)


def drive(kind: JobKind, pk: Any, work: Callable[[Claim], None]) -> bool:
    """Claim the job, run `work` with the claim kept alive, give the claim back.

    False when someone alive holds the job or it has ended. A lost claim stops the work: the
    worker that took the job over finishes it.
    """
    with transaction.atomic():
        claim = Claim.take(kind, pk)
        if claim is None:
            return False
        kind.claimed(claim)
    try:
        with claim.kept_alive():
            work(claim)
    except ClaimLost:
        logger.warning("%s %s was taken over by another worker; this one stops", kind.name, pk)
    finally:
        claim.release()
    return True


def recover(kind: JobKind) -> list[Any]:
    """Hand the active jobs whose worker stopped beating to a worker again, within the kind's policy."""
    policy = kind.policy()
    now = timezone.now()
    limit = now - timedelta(seconds=policy.stale_after_seconds)
    due = _recoverable(kind, limit)
    stale = kind.model.objects.filter(due, kind.active).values_list("pk", flat=True)
    return [pk for pk in stale if _recover_one(kind, pk, policy, now, due)]


def _recoverable(kind: JobKind, limit: datetime) -> Q:
    stale = _stale_since(limit)
    return stale | kind.unqueued if kind.unqueued is not None else stale


def _stale_since(limit: datetime) -> Q:
    """Not beaten since `limit` (or never claimed), and not handed to a worker since either."""
    silent = Q(heartbeat_at__lt=limit) | Q(heartbeat_at__isnull=True)
    not_requeued = Q(enqueued_at__lt=limit) | Q(enqueued_at__isnull=True)
    return silent & not_requeued


def _recover_one(kind: JobKind, pk: Any, policy: JobPolicy, now: datetime, due: Q) -> bool:
    silence = f"no worker has driven it for {policy.stale_after_seconds:.0f} s (worker stopped or restarted)"
    with transaction.atomic():
        # Row lock and the conditions again: its worker may have beaten, or another ticker
        # recovered it, since the list was read.
        job = kind.model.objects.select_for_update().filter(due, kind.active, pk=pk).first()
        if job is None:
            return False
        if kind.unqueued is not None and kind.model.objects.filter(kind.unqueued, pk=pk).exists():
            silence = "its task never reached the queue (the broker was down); queued now"
        if policy.max_attempts is not None and job.attempts >= policy.max_attempts:  # type: ignore[attr-defined]
            kind.abandoned(job, silence)
            return True
        kind.close_running_steps(pk, f"interrupted: {silence}")
        requeued: dict[str, Any] = {"claimed_by": "", "heartbeat_at": None, "enqueued_at": now}
        if policy.max_attempts is not None:
            requeued["attempts"] = F("attempts") + 1
        kind.model.objects.filter(pk=pk).update(**requeued)
        kind.requeued(job, silence)
        transaction.on_commit(lambda: kind.enqueue(pk))
    return True


def schedule_recovery(kind: JobKind) -> None:
    """Run `kind`'s recovery in the ticker every `recovery_interval_seconds` (read after each run)."""
    ticker.every(lambda: kind.policy().recovery_interval_seconds, name=f"{kind.name}.recover")(
        lambda: recover(kind)
    )
