"""The handoff service: start, cancel, retry, status, recovery; incomplete rollbacks (the ticker's
reclaim retries, the operator's acknowledgement); unknown GPU tenants.

The phase runner itself lives in handoffs/runner.py (part of this service layer); tasks call
`run`, views and commands call the rest. Every state change happens in one transaction with its
event; the worker is woken through transaction.on_commit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from typing import Any
from uuid import UUID

from asgiref.sync import sync_to_async
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from gaiaorch import config, jobs, queues, telemetry
from gaiaorch.errors import Conflict, InvalidRequest, NotFound, Unavailable
from gaiaorch.statements import CompiledRead
from handoffs import events, strategies, tenants
from handoffs.errors import PhaseFailed
from handoffs.models import ACTIVE, TERMINAL, Handoff, HandoffPhase, IncompleteRollback, Phase, Resolution
from handoffs.runner import Runner, reclaim_chain, release_figures
from leases import holdings
from notifications.models import Severity
from notifications.services import record_event

logger = logging.getLogger(__name__)

TASK = "handoffs.tasks.run_handoff"
WAIT_POLL_SECONDS = 0.5  # how late a waiting caller learns that its handoff ended
BEAT_EVERY_SECONDS = 1.0


def get(handoff_id: UUID | str) -> Handoff:
    try:
        return Handoff.objects.get(pk=handoff_id)
    except (Handoff.DoesNotExist, ValueError, ValidationError):
        raise NotFound(f"No handoff has id {handoff_id}.", handoff_id=str(handoff_id)) from None


def _conflict_with_active(gpu: int) -> Conflict:
    active = Handoff.objects.active().filter(gpu_index=gpu).first()
    return Conflict(
        f"Handoff {active.id if active else '?'} ({active.type if active else '?'}) is already running "
        f"on GPU {gpu}.",
        code="handoff_active",
        active_handoff=str(active.id) if active else None,
        active_phase=active.phase if active else None,
        gpu=gpu,
    )


def _require_telemetry(stack: config.Config, kind: config.HandoffType) -> None:
    sample = telemetry.sample()
    if sample.available:
        return
    if stack.handoffs.accept_container_stopped_as_proof and stack.stops_container(kind):
        return
    raise Unavailable(
        f"GPU telemetry is unavailable ({sample.reason}), so freed VRAM cannot be verified.",
        code="telemetry_unavailable",
        telemetry=sample.backend,
    )


def _require_source_holds(gpu: int, kind: config.HandoffType) -> holdings.Holding:
    holding = holdings.current_holder(gpu)
    if holding is None or holding.requester != kind.source:
        holder = holding.requester if holding else None
        raise Conflict(
            f"{kind.source} does not hold GPU {gpu} (held by {holder or 'nobody'}), "
            "so it cannot hand it over.",
            code="not_holder",
            holder=holder,
            expected_holder=kind.source,
            gpu=gpu,
        )
    return holding


def configured_type(name: str, stack: config.Config | None = None) -> config.HandoffType:
    """The configured handoff type of that name (prime_to_study or prime-to-study); 400 otherwise."""
    types = (stack or config.current()).handoffs
    kind = types.type_named(name)
    if kind is None:
        raise InvalidRequest(
            f"Handoff type {name!r} is not configured.",
            code="unknown_handoff_type",
            known=sorted(types.types),
            fields={"type": [f"must be one of: {', '.join(sorted(types.types))}"]},
        )
    return kind


def start(
    *, type: str, actor: str, reason: str = "", timeout_seconds: int | None = None, gpu: int = 0
) -> Handoff:
    """Create a handoff in `initiated` and wake a worker; refuse with 409/503 before anything moves."""
    return _start(
        type=type, actor=actor, reason=reason, timeout_seconds=timeout_seconds, gpu=gpu, note=reason
    )


def _start(
    *, type: str, actor: str, reason: str, timeout_seconds: int | None, gpu: int, note: str
) -> Handoff:
    """`start`, with `note` as the message of the handoff.started event (the operator's reason)."""
    stack = config.current()
    kind = configured_type(type, stack)
    type = kind.name
    _require_telemetry(stack, kind)
    queues.require_broker()  # a queue that is down is a 503 now, before anything is committed
    with transaction.atomic():
        if Handoff.objects.active().filter(gpu_index=gpu).exists():
            raise _conflict_with_active(gpu)
        holding = _require_source_holds(gpu, kind)
        try:
            # The partial unique index settles the race two processes can still run past the check above.
            with transaction.atomic():
                handoff = Handoff.objects.create(
                    type=type,
                    gpu_index=gpu,
                    source=kind.source,
                    destination=kind.destination,
                    reason=reason,
                    timeout_seconds=timeout_seconds,
                    requested_by=actor,
                    source_lease_id=holding.lease_id,
                    enqueued_at=timezone.now(),
                )
        except IntegrityError:
            raise _conflict_with_active(gpu) from None
        # The event before the phase record: the event log's order lock, held from the event to the
        # commit, then covers the record's id too, so a reader that waits for that lock never sees a
        # later record while this first one of a new handoff is still in flight (console.metrics).
        record_event(
            events.HANDOFF_STARTED,
            f"Handoff {type} started: {kind.source} → {kind.destination}",
            note,
            actor=actor,
            data=handoff.event_data(),
            subject=("handoff", handoff.id),
        )
        now = timezone.now()
        HandoffPhase.objects.create(
            handoff=handoff,
            name=Phase.INITIATED,
            started_at=now,
            finished_at=now,
            outcome=jobs.StepOutcome.SUCCEEDED,
            detail=f"{kind.source} holds GPU {gpu} under lease {holding.lease_id}",
            figures={"source_lease_id": str(holding.lease_id), "fencing_token": holding.fencing_token},
        )
        transaction.on_commit(lambda: enqueue(handoff.id))
    return handoff


def _phase(handoff_id: UUID | str) -> str | None:
    return Handoff.objects.filter(pk=handoff_id).values_list("phase", flat=True).first()


async def wait_for_end(
    handoff_id: UUID | str, *, timeout_seconds: float, poll_seconds: float = WAIT_POLL_SECONDS
) -> dict[str, Any]:
    """The handoff's status once it has ended, or as it stands when the timeout passes.

    Holds no thread while it waits: it reads the row's phase (one primary-key lookup) every poll;
    the worker that drives the handoff may be another process. A caller that gives up (its
    connection closes) leaves the handoff running."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        phase = await sync_to_async(_phase)(handoff_id)
        remaining = deadline - time.monotonic()
        if phase in TERMINAL or remaining <= 0:
            return await sync_to_async(lambda: status(get(handoff_id)))()
        await asyncio.sleep(min(poll_seconds, remaining))


def enqueue(handoff_id: UUID) -> None:
    """Hand a committed handoff to the worker; never raises (the caller's change is committed)."""
    if not queues.enqueue(TASK, str(handoff_id), group="handoffs"):
        # Not queued: while no worker has claimed it, an empty enqueued_at makes recovery queue
        # it at its next tick (HandoffJobs.unqueued).
        Handoff.objects.filter(pk=handoff_id, claimed_by="").update(enqueued_at=None)


def cancel(handoff_id: UUID | str, *, actor: str, reason: str = "") -> Handoff:
    """Ask the runner to stop; it rolls back to `cancelled` at its next check (at most one poll later)."""
    with transaction.atomic():
        # Row lock: a cancel racing the runner's last transition must see the phase it ends in.
        handoff = get_for_update(handoff_id)
        if handoff.phase in TERMINAL:
            raise Conflict(
                f"Handoff {handoff.id} already ended as {handoff.phase}.",
                code="handoff_finished",
                handoff_id=str(handoff.id),
                phase=handoff.phase,
            )
        if handoff.cancel_requested:
            return handoff
        handoff.cancel_requested = True
        handoff.cancel_requested_by = actor
        handoff.save(update_fields=["cancel_requested", "cancel_requested_by"])
        record_event(
            events.HANDOFF_CANCEL_REQUESTED,
            f"Cancel requested for handoff {handoff.type} in {handoff.phase}",
            reason,
            actor=actor,
            data=handoff.event_data(),
            subject=("handoff", handoff.id),
        )
    return handoff


def get_for_update(handoff_id: UUID | str) -> Handoff:
    get(handoff_id)
    # why: the caller's change (cancel, a runner's transition) must see the phase the other ends in.
    return Handoff.objects.select_for_update().get(pk=handoff_id)


def retry(handoff_id: UUID | str, *, actor: str, reason: str) -> Handoff:
    """Start a new handoff with the same parameters as an ended one; `reason` (why it is retried)
    is the message of its handoff.started event, the handoff keeps the reason it was started for."""
    previous = get(handoff_id)
    if previous.phase not in (Phase.FAILED, Phase.CANCELLED):
        raise Conflict(
            f"Only failed or cancelled handoffs can be retried; {previous.id} is {previous.phase}.",
            code="not_retryable",
            phase=previous.phase,
        )
    return _start(
        type=previous.type,
        actor=actor,
        reason=previous.reason or f"retry of {previous.id}",
        timeout_seconds=previous.timeout_seconds,
        gpu=previous.gpu_index,
        note=f"Retry of {previous.id}: {reason}",
    )


class HandoffJobs(jobs.JobKind):
    """Handoffs as claimed jobs: handed to a worker again until they end, resuming from the last
    persisted phase (every phase is safe to repeat)."""

    name = "handoffs.handoff"
    model = Handoff
    step_model = HandoffPhase
    step_job_field = "handoff_id"
    active = Q(phase__in=ACTIVE)
    cancel_requested = Q(cancel_requested=True)
    unqueued = Q(enqueued_at__isnull=True, claimed_by="")  # the broker refused its task

    def policy(self) -> jobs.JobPolicy:
        settings = config.current().handoffs
        return jobs.JobPolicy(
            beat_every_seconds=BEAT_EVERY_SECONDS,
            stale_after_seconds=settings.stale_after_seconds,
            recovery_interval_seconds=settings.recovery_interval_seconds,
        )

    def enqueue(self, pk: UUID) -> None:
        enqueue(pk)

    def requeued(self, job: Handoff, silence: str) -> None:
        if not job.claimed_by:
            return  # never picked up: nothing was interrupted
        record_event(
            events.HANDOFF_RECOVERING,
            f"Worker {job.claimed_by} stopped driving handoff {job.type} in {job.phase}",
            "Another worker resumes it from its last persisted phase.",
            severity=Severity.WARNING,
            data=job.event_data(),
            subject=("handoff", job.id),
        )


HANDOFFS = HandoffJobs()


def run(handoff_id: UUID | str) -> None:
    """Drive one handoff to its end, if no live worker drives it already."""
    stack = config.current()
    jobs.drive(HANDOFFS, handoff_id, lambda claim: Runner(claim, stack).drive())


def recover() -> list[UUID]:
    """Re-enqueue active handoffs whose worker stopped beating; the runner resumes them."""
    return jobs.recover(HANDOFFS)


def watch_tenants() -> dict[str, list]:
    """The ticker's: record GPU processes outside every service as they appear and go."""
    return tenants.watch()


# --- incomplete rollbacks ---------------------------------------------------------------------

RECLAIM_CLAIM_SECONDS = 3600  # an attempt in progress hides its row from other tickers this long


# The status reads, compiled once (gaiaorch.statements): a poll of /status pays only their statements.
_OPEN_ROLLBACKS = CompiledRead(
    lambda: IncompleteRollback.objects.filter(resolution="").select_related("handoff")
)
_ACTIVE_HANDOFF_ON = CompiledRead(
    lambda gpu: Handoff.objects.active().filter(gpu_index=gpu)[:1], gpu=Handoff._meta.get_field("gpu_index")
)


def open_rollbacks() -> list[IncompleteRollback]:
    """Rollbacks that left a source without its GPU memory, not reclaimed nor acknowledged yet."""
    return _OPEN_ROLLBACKS.models()


def retry_reclaims() -> list[UUID]:
    """Reclaim again for every open incomplete rollback whose next attempt is due; their handoff ids."""
    now = timezone.now()
    due = IncompleteRollback.objects.filter(resolution="", retry_reclaim=True, next_attempt_at__lte=now)
    return [row.handoff_id for row in due if _retry_reclaim(row, now)]


def _retry_reclaim(row: IncompleteRollback, now) -> bool:
    # The conditional UPDATE is the claim: of two tickers, one moves next_attempt_at and retries.
    claimed = IncompleteRollback.objects.filter(
        pk=row.pk, resolution="", next_attempt_at=row.next_attempt_at
    ).update(next_attempt_at=now + timedelta(seconds=RECLAIM_CLAIM_SECONDS))
    if not claimed:
        return False
    settings = config.current()
    handoff = row.handoff
    holder = holdings.current_holder(row.gpu_index)
    busy = Handoff.objects.active().filter(gpu_index=row.gpu_index).exists()
    if busy or holder is None or holder.requester != row.source:
        # Not now: a handoff runs there, or the GPU is no longer the source's to reclaim on.
        why = "a handoff is running on the GPU" if busy else f"{row.source} does not hold GPU {row.gpu_index}"
        _reschedule(row, settings, f"not attempted: {why}", attempted=False)
        return False
    try:
        figures = _reclaim_and_check(settings, handoff, holder)
    except PhaseFailed as failure:
        logger.warning(
            "handoff %s (%s): reclaim of %s failed again (attempt %s): %s",
            handoff.id,
            handoff.type,
            row.source,
            row.attempts + 1,
            failure.detail,
        )
        _reschedule(row, settings, failure.detail, attempted=True)
        return False
    _resolve(row, Resolution.RECLAIMED, actor="ticker", reason=f"reclaimed after {row.attempts + 1} attempts")
    logger.warning(
        "handoff %s (%s): %s reclaimed its GPU memory: %s", handoff.id, handoff.type, row.source, figures
    )
    return True


def _reclaim_and_check(settings: config.Config, handoff: Handoff, holder: holdings.Holding) -> dict:
    deadline = time.monotonic() + settings.handoffs.phase_timeouts[Phase.ROLLING_BACK]
    waiting = strategies.Waiting(
        lambda seconds: time.sleep(max(0.0, min(seconds, deadline - time.monotonic()))), deadline
    )
    figures = reclaim_chain(settings, handoff, release_figures(handoff), holder, waiting)
    for service in settings.gpu_chain(handoff.source):
        timeout = min(settings.handoffs.http_timeout_seconds, max(0.1, deadline - time.monotonic()))
        strategies.wait_healthy(service, timeout, deadline, waiting.pause)
    return figures


def _reschedule(row: IncompleteRollback, settings: config.Config, error: str, *, attempted: bool) -> None:
    attempts = row.attempts + (1 if attempted else 0)
    retry = settings.handoffs
    # base after the rollback (its first attempt), then twice that after each failure, up to the max
    delay = min(retry.reclaim_retry_base_seconds * 2**attempts, retry.reclaim_retry_max_seconds)
    IncompleteRollback.objects.filter(pk=row.pk, resolution="").update(
        attempts=attempts,
        last_error=error[:2000],
        last_attempt_at=timezone.now() if attempted else row.last_attempt_at,
        next_attempt_at=timezone.now() + timedelta(seconds=delay),
    )


def acknowledge_rollback(handoff_id: UUID | str, *, actor: str, reason: str) -> IncompleteRollback:
    """An operator takes an incomplete rollback in hand: its retries stop, /ready no longer fails on it."""
    if not reason.strip():
        raise InvalidRequest(
            "An acknowledgement needs a reason.", fields={"reason": ["this field is required"]}
        )
    handoff = get(handoff_id)
    row = IncompleteRollback.objects.filter(handoff=handoff).first()
    if row is None:
        raise Conflict(
            f"Handoff {handoff.id} left no incomplete rollback.",
            code="no_incomplete_rollback",
            handoff_id=str(handoff.id),
        )
    if not row.open:
        raise Conflict(
            f"The rollback of handoff {handoff.id} was already {row.resolution} by {row.resolved_by}.",
            code="rollback_resolved",
            handoff_id=str(handoff.id),
            resolution=row.resolution,
        )
    return _resolve(row, Resolution.ACKNOWLEDGED, actor=actor, reason=reason)


def _resolve(row: IncompleteRollback, resolution: str, *, actor: str, reason: str) -> IncompleteRollback:
    with transaction.atomic():
        # Row lock: the ticker's reclaim and an operator's acknowledgement must not both resolve it.
        locked = IncompleteRollback.objects.select_for_update().get(pk=row.pk)
        if not locked.open:
            return locked
        locked.resolution, locked.resolved_at = resolution, timezone.now()
        locked.resolved_by, locked.resolution_reason = actor[:150], reason[:500]
        locked.save(update_fields=["resolution", "resolved_at", "resolved_by", "resolution_reason"])
        handoff = locked.handoff
        acknowledged = resolution == Resolution.ACKNOWLEDGED
        record_event(
            events.ROLLBACK_RESOLVED[resolution],
            f"Incomplete rollback of handoff {handoff.type} {resolution}: "
            f"{locked.source} on GPU {locked.gpu_index}",
            reason,
            actor=actor,
            severity=Severity.WARNING if acknowledged else Severity.INFO,
            data=handoff.event_data(resolution=resolution, attempts=locked.attempts),
            subject=("handoff", handoff.id),
        )
    return locked


def active_status(gpu: int = 0) -> dict[str, Any] | None:
    """The running handoff on a GPU in the status shape, or None (for the seed's GET /status)."""
    handoff = next(iter(_ACTIVE_HANDOFF_ON.models(gpu=gpu)), None)
    return status(handoff) if handoff else None


def status(handoff: Handoff) -> dict[str, Any]:
    """The seed's status shape plus the phase timeline."""
    error = handoff.error or None
    return {
        "handoff_id": str(handoff.id),
        "handoff_type": handoff.type,
        "phase": handoff.phase,
        "progress_pct": handoff.progress_pct,
        "started_at": handoff.created_at,
        "completed_at": handoff.completed_at,
        "source": handoff.source,
        "destination": handoff.destination,
        "gpu": handoff.gpu_index,
        "reason": handoff.reason,
        "requested_by": handoff.requested_by,
        "cancel_requested": handoff.cancel_requested,
        "error": error["detail"] if error else None,
        "error_context": error,
        "warnings": handoff.warnings,
        "lease_id": str(handoff.destination_lease_id) if handoff.destination_lease_id else None,
        "fencing_token": handoff.fencing_token,
        "phases": [record.as_dict() for record in handoff.phases.order_by("started_at", "id")],
    }
