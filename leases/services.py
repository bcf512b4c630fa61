"""GPU lease rules: the only code that changes Gpu and Lease rows.

Every decision about a GPU (grant, release, expire, revoke, transfer) runs in one transaction
holding that GPU's row lock, writes its audit event inside that transaction, and grants the next
eligible waiter before committing. Public functions take keyword arguments and are stable: other
apps (handoffs, containers) call acquire, release, transfer, current_holder and gpu_status.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from gaiaorch import attribution, config, telemetry
from gaiaorch.errors import Conflict, InvalidRequest, NotFound
from leases import wakeups
from leases.models import Gpu, Lease, LeaseStatus
from notifications.models import Severity
from notifications.services import record_event

REAPER = "lease-reaper"
WAIT_POLL_SECONDS = 0.5  # grants in another process are seen this late at most

EVENT_TITLES = {
    "requested": "{requester} asked for GPU {gpu}",
    "granted": "{requester} was granted GPU {gpu}",
    "released": "{requester} released GPU {gpu}",
    "expired": "{requester}'s lease on GPU {gpu} expired",
    "revoked": "{requester}'s lease on GPU {gpu} was revoked",
    "cancelled": "{requester} left the queue for GPU {gpu}",
}
EVENT_SEVERITY = {"expired": Severity.WARNING, "revoked": Severity.WARNING}


@dataclass(frozen=True)
class AcquireResult:
    lease: Lease
    granted: bool
    queue_position: int | None
    waiting_for: str
    created: bool = False  # True when this call made the queue entry (not a re-acquire)


# ---------------------------------------------------------------- requesters and GPUs


def requesters() -> list[str]:
    """Requester names are the configured services (containers and plain processes alike)."""
    return config.current().requesters()


def check_requester(requester: str) -> None:
    if requester not in requesters():
        raise InvalidRequest(
            f"Unknown requester {requester!r}.",
            fields={"requester": [f"must be one of: {', '.join(requesters())}"]},
        )


def sync_gpus(sampled: telemetry.Telemetry | None = None) -> list[Gpu]:
    """Make Gpu rows match telemetry, or settings.GPU_COUNT while telemetry is unavailable."""
    sampled = sampled or telemetry.sample()
    measured = sampled.available and bool(sampled.gpus)
    if measured:
        wanted = {g.index: {"uuid": g.uuid, "name": g.name, "total_mib": g.total_mib} for g in sampled.gpus}
    else:
        wanted = {index: {} for index in range(settings.GPU_COUNT)}
    for index, facts in wanted.items():
        facts = {**facts, "present": True}
        # get_or_create survives a concurrent creator of the same row (unique index + savepoint).
        gpu, _ = Gpu.objects.get_or_create(index=index, defaults=facts)
        changed = {name: value for name, value in facts.items() if getattr(gpu, name) != value}
        if changed:
            Gpu.objects.filter(pk=gpu.pk).update(**changed)
    if measured:
        # Only a working probe may say a GPU is gone; a failing one must not hide GPUs.
        Gpu.objects.filter(present=True).exclude(index__in=wanted).update(present=False)
    return list(Gpu.objects.filter(present=True))


def _locked_gpu(index: int) -> Gpu:
    # Every decision about one GPU holds its row lock until commit: without it two PostgreSQL
    # transactions could both see the GPU free and grant it twice (the partial unique index
    # would then fail one of them with a 500). SQLite's IMMEDIATE transactions serialise
    # writers already, and select_for_update is a no-op there.
    return _gpu_row(index, Gpu.objects.select_for_update())


def _gpu_row(index: int, rows=Gpu.objects) -> Gpu:
    for attempt in range(2):
        gpu = rows.filter(index=index, present=True).first()
        if gpu is not None:
            return gpu
        if attempt == 0:
            sync_gpus()
    known = ", ".join(str(g) for g in Gpu.objects.filter(present=True).values_list("index", flat=True))
    raise InvalidRequest(f"GPU {index} does not exist.", fields={"gpu": [f"unknown GPU; known: {known}"]})


def _lease_gpu_index(lease_id: Any) -> int:
    try:
        index = Lease.objects.filter(pk=lease_id).values_list("gpu__index", flat=True).first()
    except (ValidationError, ValueError):
        raise InvalidRequest(
            f"{lease_id!r} is not a lease id.", fields={"lease_id": ["must be a UUID"]}
        ) from None
    if index is None:
        raise NotFound(f"No lease {lease_id}.", lease_id=str(lease_id))
    return index


# ---------------------------------------------------------------- one GPU's live leases


@dataclass
class GpuState:
    """A GPU's live leases (read under its row lock when deciding); transitions keep it current."""

    gpu: Gpu
    holder: Lease | None
    queue: list[Lease]  # waiting entries in grant order
    changed_gpu_fields: set[str] = field(default_factory=set)

    def live(self) -> list[Lease]:
        return ([self.holder] if self.holder else []) + self.queue

    def find(self, lease_id: Any) -> Lease | None:
        return next((lease for lease in self.live() if str(lease.id) == str(lease_id)), None)

    def for_requester(self, requester: str) -> Lease | None:
        return next((lease for lease in self.live() if lease.requester == requester), None)

    def position(self, lease: Lease) -> int | None:
        return self.queue.index(lease) + 1 if lease in self.queue else None

    def remove(self, lease: Lease) -> None:
        if self.holder == lease:
            self.holder = None
        if lease in self.queue:
            self.queue.remove(lease)


def _read_state(gpu: Gpu) -> GpuState:
    live = list(Lease.objects.live().filter(gpu=gpu).in_grant_order())
    for lease in live:
        lease.gpu = gpu
    holder = next((lease for lease in live if lease.status == LeaseStatus.ACTIVE), None)
    return GpuState(gpu, holder, [lease for lease in live if lease.status == LeaseStatus.WAITING])


@contextmanager
def _deciding(index: int, actor: str) -> Iterator[GpuState]:
    """One decision about one GPU in one transaction: lock it, read its live leases, expire the
    overdue ones, let the caller act, grant the next waiter, commit. An exception rolls it all back."""
    with transaction.atomic():
        state = _read_state(_locked_gpu(index))
        _expire_overdue(state)
        yield state
        _grant_next(state, actor)
        if state.changed_gpu_fields:
            state.gpu.save(update_fields=sorted(state.changed_gpu_fields))


def describe_wait(lease: Lease, state: GpuState) -> str:
    """A human sentence saying what a waiter waits for."""
    position = state.position(lease)
    if position is None:
        return ""
    gpu = state.gpu.index
    held = f"GPU {gpu} is held by {state.holder.requester}" if state.holder else ""
    if position > 1:
        ahead = f"{position - 1} request{'s' if position > 2 else ''} ahead in the queue for GPU {gpu}"
        return f"{ahead}; {held}" if held else ahead
    return held or lease.waiting_for or f"the next grant of GPU {gpu}"


def _result(lease: Lease, state: GpuState, created: bool = False) -> AcquireResult:
    return AcquireResult(
        lease=lease,
        granted=lease.status == LeaseStatus.ACTIVE,
        queue_position=state.position(lease),
        waiting_for=describe_wait(lease, state),
        created=created,
    )


# ---------------------------------------------------------------- transitions (inside _deciding)


def _event(lease: Lease, what: str, actor: str, message: str = "", **data: Any) -> None:
    names = {"requester": lease.requester, "gpu": lease.gpu.index}
    record_event(
        f"lease.{what}",
        EVENT_TITLES[what].format(**names),
        message,
        actor=actor,
        severity=EVENT_SEVERITY.get(what, Severity.INFO),
        data={
            "lease_id": str(lease.id),
            **names,
            "status": lease.status,
            "fencing_token": lease.fencing_token,
            "reason": lease.reason,
            **data,
        },
        subject=("lease", lease.id),
    )
    key = str(lease.id)
    transaction.on_commit(lambda: wakeups.notify(key))


def _expiry(lease: Lease, now: datetime) -> datetime | None:
    return now + timedelta(seconds=lease.ttl_seconds) if lease.ttl_seconds else None


def _new_lease(state: GpuState, **fields: Any) -> Lease:
    now = timezone.now()
    ttl = fields.pop("ttl_seconds", None) or settings.LEASE_DEFAULT_TTL_SECONDS
    gpu = state.gpu
    lease = Lease(gpu=gpu, arrival=gpu.next_arrival, requested_at=now, ttl_seconds=ttl, **fields)
    # A waiting entry with a TTL must show signs of life too, so a crashed client leaves no ghost.
    lease.expires_at = _expiry(lease, now)
    lease.save(force_insert=True)
    gpu.next_arrival += 1
    state.changed_gpu_fields.add("next_arrival")
    state.queue.append(lease)
    state.queue.sort(key=lambda each: (-each.priority, each.arrival))
    return lease


def _grant(state: GpuState, lease: Lease, actor: str, **data: Any) -> None:
    now = timezone.now()
    lease.status = LeaseStatus.ACTIVE
    lease.fencing_token = state.gpu.next_fencing_token
    lease.granted_at = lease.last_heartbeat_at = now
    lease.expires_at = _expiry(lease, now)
    lease.waiting_for = ""
    lease.save(
        update_fields=[
            "status",
            "fencing_token",
            "granted_at",
            "last_heartbeat_at",
            "expires_at",
            "waiting_for",
        ]
    )
    # The counter lives on the locked Gpu row and only goes up: tokens are never reused, even
    # after every lease row of the GPU is deleted or the process restarts.
    state.gpu.next_fencing_token += 1
    state.changed_gpu_fields.add("next_fencing_token")
    state.queue.remove(lease)
    state.holder = lease
    _event(lease, "granted", actor, **data)


def _end(state: GpuState, lease: Lease, status: str, actor: str, reason: str = "") -> None:
    lease.status = status
    lease.ended_at = timezone.now()
    lease.ended_by = actor[:150]
    lease.end_reason = reason[:500]
    lease.waiting_for = ""
    lease.save(update_fields=["status", "ended_at", "ended_by", "end_reason", "waiting_for"])
    state.remove(lease)
    _event(lease, status, actor, reason)


def _expire_overdue(state: GpuState) -> None:
    now = timezone.now()
    for lease in state.live():
        if lease.expires_at and lease.expires_at <= now:
            _end(state, lease, LeaseStatus.EXPIRED, REAPER, "not renewed within its TTL")


def _memory_blocker(gpu: Gpu, lease: Lease) -> str:
    """Why measured memory forbids granting `lease` now ("" when it may be granted), naming who
    holds it: "9.1 GiB held by pid 4242 `python train.py`, outside any lease"."""
    if lease.memory_mib is None:
        return ""
    sample = telemetry.sample()
    sampled = sample.gpu(gpu.index)
    if sampled is None or sampled.free_mib >= lease.memory_mib:
        return ""  # without telemetry there is nothing to measure: admission by queue order only
    needed = f"{lease.memory_mib} MiB free needed, {sampled.free_mib} MiB free on GPU {gpu.index}"
    owners = attribution.current(sample).gpu(gpu.index)
    holders = owners.holders()[:3] if owners else []
    if not holders:
        why = owners.reason if owners else "no process list"
        return f"{needed}: {sampled.used_mib / 1024:.1f} GiB in use by processes outside any lease ({why})"
    return f"{needed}: " + "; ".join(f"{owner.describe()}, outside any lease" for owner in holders)


def _grant_next(state: GpuState, actor: str) -> None:
    """Give a free GPU to the head of its queue, if measured memory allows. Strict order:
    a blocked head blocks everyone behind it, so a newcomer never overtakes a waiter."""
    if state.holder is not None or not state.queue:
        return
    head = state.queue[0]
    blocker = _memory_blocker(state.gpu, head)[:300]
    if not blocker:
        _grant(state, head, actor)
    elif head.waiting_for != blocker:
        head.waiting_for = blocker
        head.save(update_fields=["waiting_for"])


def _renew(lease: Lease) -> None:
    now = timezone.now()
    lease.last_heartbeat_at = now
    lease.expires_at = _expiry(lease, now)
    lease.save(update_fields=["last_heartbeat_at", "expires_at"])


def _ended_conflict(lease_id: Any) -> Conflict:
    lease = Lease.objects.select_related("gpu").get(pk=lease_id)
    holder = Lease.objects.active().filter(gpu=lease.gpu).values_list("requester", flat=True).first()
    return Conflict(
        f"Lease {lease.id} is already {lease.status}.",
        lease_id=str(lease.id),
        status=lease.status,
        holder=holder,
    )


# ---------------------------------------------------------------- housekeeping


def settle(gpu: int) -> GpuState:
    """A fresh view of one GPU for a read; lazily expires what is overdue and admits a waiter
    to a free GPU first (taking the lock only when there is something to do)."""
    state = _read_state(_gpu_row(gpu))
    now = timezone.now()
    overdue = any(lease.expires_at and lease.expires_at <= now for lease in state.live())
    if overdue or (state.holder is None and state.queue):
        with _deciding(gpu, REAPER) as state:
            pass
    return state


def expire_due() -> list[int]:
    """End every live lease past its expiry (holders and waiters) and grant the next waiters."""
    overdue = Lease.objects.live().filter(expires_at__lte=timezone.now())
    indexes = sorted(set(overdue.values_list("gpu__index", flat=True)))
    for index in indexes:
        with _deciding(index, REAPER):
            pass
    return indexes


def admit_waiting() -> list[int]:
    """Try free GPUs whose queue head waits for memory (freed by processes outside any lease)."""
    free = Gpu.objects.filter(present=True, leases__status=LeaseStatus.WAITING).exclude(
        leases__status=LeaseStatus.ACTIVE
    )
    indexes = sorted(set(free.values_list("index", flat=True)))
    for index in indexes:
        with _deciding(index, REAPER):
            pass
    return indexes


def reap() -> None:
    """The ticker job: expiry within TTL + one interval, and memory-blocked admissions."""
    expire_due()
    admit_waiting()


# ---------------------------------------------------------------- public API


def _check_positive(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise InvalidRequest(f"{name} must be a positive integer.", fields={name: ["must be >= 1"]})


def acquire(
    *,
    requester: str,
    reason: str,
    gpu: int = 0,
    priority: int = 0,
    ttl_seconds: int | None = None,
    memory_mib: int | None = None,
    actor: str,
) -> AcquireResult:
    """Ask for a GPU: granted at once when free and nobody waits, else queued.

    Re-acquire by the holder returns (and renews) its lease; a waiter asking again gets its entry.
    """
    check_requester(requester)
    _check_positive("ttl_seconds", ttl_seconds)
    _check_positive("memory_mib", memory_mib)
    with _deciding(gpu, actor) as state:
        lease = state.for_requester(requester)
        created = lease is None
        if lease is not None:
            _renew(lease)
        else:
            fields = {"reason": reason[:500], "priority": priority, "memory_mib": memory_mib}
            lease = _new_lease(state, requester=requester, ttl_seconds=ttl_seconds, **fields)
            _event(lease, "requested", actor, priority=priority, memory_mib=memory_mib)
    return _result(lease, state, created)


def _end_live(lease_id: Any, actor: str, decide) -> Lease:
    """Run `decide(state, lease)` on a live lease; an ended one is a 409, raised after commit so
    that any expiry found on the way is kept."""
    with _deciding(_lease_gpu_index(lease_id), actor) as state:
        lease = state.find(lease_id)
        refusal = decide(state, lease) if lease is not None else None
    if lease is None:
        raise _ended_conflict(lease_id)
    if refusal is not None:
        raise refusal
    return lease


def release(lease_id: Any, *, actor: str, reason: str = "") -> Lease:
    """End an active lease (or withdraw a waiting entry) and grant the next waiter."""

    return _end_live(lease_id, actor, lambda state, lease: _release(state, lease, actor, reason))


def _release(state: GpuState, lease: Lease, actor: str, reason: str) -> None:
    if lease == state.holder:
        _end(state, lease, LeaseStatus.RELEASED, actor, reason)
    else:
        _end(state, lease, LeaseStatus.CANCELLED, actor, reason or "released while waiting")


def release_without_id(*, gpu: int | None, requester: str | None, actor: str, reason: str = "") -> Lease:
    """Release without a lease id, as the seed's callers do.

    With a requester (a service acting for itself): its own lease is released, or its own queue
    entry withdrawn, on `gpu`, or on the only GPU where it has one. Without a requester (an
    operator): the current holder of `gpu`, or of the only GPU, is released. Nothing to release
    is a Conflict (`nothing_held`), raised after commit so that any expiry found on the way is kept.
    """
    index = gpu if gpu is not None else _unnamed_gpu(requester)
    if index is None:
        raise _nothing_held(requester, gpu=None, queue_length=0, holder=None)
    if requester is None and not reason:
        reason = f"{actor} released the holder of GPU {index} without a lease id"
    with _deciding(index, actor) as state:
        lease = state.for_requester(requester) if requester else state.holder
        if lease is not None:
            _release(state, lease, actor, reason)
    if lease is None:
        holder = state.holder.requester if state.holder else None
        raise _nothing_held(requester, gpu=index, queue_length=len(state.queue), holder=holder)
    return lease


def _unnamed_gpu(requester: str | None) -> int | None:
    """The GPU a release without id and without ?gpu= is about: the requester's (None when it has
    a lease nowhere and the box has several GPUs), or the only GPU."""
    present = [each.index for each in sync_gpus()]
    indexes = present
    if requester is not None:
        where = Lease.objects.live().filter(requester=requester).values_list("gpu__index", flat=True)
        indexes = sorted(set(where)) or (present if len(present) == 1 else [])
    if len(indexes) > 1:
        listed = ", ".join(map(str, indexes))
        raise InvalidRequest(
            f"Name the GPU to release (?gpu= or the body's gpu): it could be GPU {listed}.",
            fields={"gpu": [f"required when more than one GPU is concerned; one of {listed}"]},
        )
    return indexes[0] if indexes else None


def _nothing_held(
    requester: str | None, *, gpu: int | None, queue_length: int, holder: str | None
) -> Conflict:
    where = f"GPU {gpu}" if gpu is not None else "any GPU"
    if requester:
        detail = f"{requester} holds no lease and waits in no queue on {where}; nothing was released."
    else:
        detail = f"Nobody holds {where}; nothing was released."
    return Conflict(
        detail,
        code="nothing_held",
        success=False,
        message=detail,
        gpu=gpu,
        holder=holder,
        queue_length=queue_length,
    )


def heartbeat(lease_id: Any, *, actor: str) -> Lease:
    """Renew a live lease's TTL. An expired lease is gone: acquire again."""
    return _end_live(lease_id, actor, lambda state, lease: _renew(lease))


def revoke(lease_id: Any, *, actor: str, reason: str) -> Lease:
    """An operator takes a lease away (holder or waiter); the next waiter is granted."""
    if not reason.strip():
        raise InvalidRequest("A revoke needs a reason.", fields={"reason": ["this field is required"]})
    return _end_live(
        lease_id, actor, lambda state, lease: _end(state, lease, LeaseStatus.REVOKED, actor, reason)
    )


def cancel(lease_id: Any, *, actor: str, reason: str = "") -> Lease:
    """Withdraw a waiting entry from the queue."""

    def decide(state: GpuState, lease: Lease) -> Conflict | None:
        if lease == state.holder:
            return Conflict(
                f"Lease {lease.id} holds GPU {state.gpu.index}; release it instead of cancelling.",
                lease_id=str(lease.id),
                status=lease.status,
            )
        _end(state, lease, LeaseStatus.CANCELLED, actor, reason or "withdrawn")
        return None

    return _end_live(lease_id, actor, decide)


def check(lease_id: Any, *, renew: bool = False) -> AcquireResult:
    """Where a lease stands now (after lazy expiry and admission); `renew` keeps a waiter alive."""
    index = _lease_gpu_index(lease_id)
    state = settle(index)
    lease = state.find(lease_id)
    if lease is not None and renew and lease.status == LeaseStatus.WAITING and _renewal_due(lease):
        with _deciding(index, lease.requester) as state:
            lease = state.find(lease_id)
            if lease is not None:
                _renew(lease)
    if lease is None:  # ended: report how
        return AcquireResult(Lease.objects.select_related("gpu").get(pk=lease_id), False, None, "")
    return _result(lease, state)


def _renewal_due(lease: Lease) -> bool:
    # Renew at half-life only, so a long-polling waiter writes rarely.
    if lease.expires_at is None:
        return False
    return lease.expires_at - timezone.now() < timedelta(seconds=lease.ttl_seconds / 2)


async def wait(
    lease_id: Any, *, timeout_seconds: float, poll_seconds: float = WAIT_POLL_SECONDS
) -> AcquireResult:
    """Wait until the lease is no longer waiting or the timeout passes, holding no thread.

    Polls the database (another process may grant it) and wakes early when a change of this
    lease commits in this process."""
    deadline = time.monotonic() + timeout_seconds
    with wakeups.listen(str(lease_id)) as signal:
        while True:
            signal.clear()
            result = await sync_to_async(check)(lease_id, renew=True)
            remaining = deadline - time.monotonic()
            if result.lease.status != LeaseStatus.WAITING or remaining <= 0:
                return result
            await signal.wait(min(poll_seconds, remaining))


GAVE_UP = "gave up waiting"


def withdraw(lease_id: Any, *, actor: str) -> AcquireResult:
    """Take a waiter that gave up out of the queue (or report it, if granted at the last moment)."""
    try:
        lease = cancel(lease_id, actor=actor, reason=GAVE_UP)
    except Conflict:
        return check(lease_id)
    return AcquireResult(lease, granted=False, queue_position=None, waiting_for="")


async def wait_out(
    entry: AcquireResult, *, timeout_seconds: float, keep_queued: bool, actor: str
) -> tuple[AcquireResult, bool]:
    """Wait on a queue entry; returns (where it stands, whether it was withdrawn).

    The no-ghost rule: an entry the caller's own call just created (`entry.created`) is withdrawn
    when the wait ends without a grant (timeout, or the caller hanging up) unless `keep_queued`.
    An entry that existed before stays queued.
    """
    owned = entry.created and not keep_queued
    try:
        result = entry
        if entry.lease.status == LeaseStatus.WAITING:
            result = await wait(entry.lease.id, timeout_seconds=timeout_seconds)
    except asyncio.CancelledError:
        if owned:
            await asyncio.shield(sync_to_async(withdraw)(entry.lease.id, actor=actor))
        raise
    if owned and result.lease.status == LeaseStatus.WAITING:
        return await sync_to_async(withdraw)(entry.lease.id, actor=actor), True
    return result, False


def transfer(
    *, gpu: int, to_requester: str, reason: str, actor: str, expected_holder: str | None = None
) -> Lease:
    """Atomically end the GPU's active lease (if any) and grant a new one to `to_requester`,
    bypassing the queue and memory admission (the caller verifies memory itself).
    With `expected_holder`, refuse (409) unless that requester holds it."""
    check_requester(to_requester)
    with _deciding(gpu, actor) as state:
        current = state.holder
        if expected_holder is not None and (current is None or current.requester != expected_holder):
            holder = current.requester if current else None
            raise Conflict(
                f"GPU {gpu} is held by {holder or 'nobody'}, not {expected_holder}.",
                code="holder_mismatch",
                gpu=gpu,
                holder=holder,
                lease_id=str(current.id) if current else None,
            )
        if current is not None:
            _end(state, current, LeaseStatus.RELEASED, actor, f"transferred to {to_requester}: {reason}")
        pending = state.for_requester(to_requester)
        if pending is not None:
            _end(state, pending, LeaseStatus.CANCELLED, actor, "superseded by a transfer of the GPU")
        lease = _new_lease(state, requester=to_requester, reason=reason[:500])
        _grant(state, lease, actor, transfer=True, previous_holder=current.requester if current else None)
    return lease


def current_holder(gpu: int) -> Lease | None:
    return settle(gpu).holder


def get_lease(lease_id: Any) -> Lease:
    """The lease as it stands now (after lazy expiry of its GPU)."""
    state = settle(_lease_gpu_index(lease_id))
    return state.find(lease_id) or Lease.objects.select_related("gpu").get(pk=lease_id)


# ---------------------------------------------------------------- status


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _memory(gpu: Gpu, sampled: telemetry.GpuSample | None, owners: attribution.GpuAttribution | None):
    """Measured memory: the seed's three figures, the driver's reservation, and who holds the rest."""
    return {
        "total_mb": sampled.total_mib if sampled else gpu.total_mib,
        "used_mb": sampled.used_mib if sampled else None,
        "free_mb": sampled.free_mib if sampled else None,
        "reserved_mb": sampled.reserved_mib if sampled else None,
        "by_service_mb": owners.by_service() if owners else {},
        "unattributed_mb": owners.unattributed_mib if owners else None,
        "attribution_available": bool(owners and owners.available),
        "attribution_reason": owners.reason if owners else "no telemetry",
    }


def _tenants(owners: attribution.GpuAttribution | None) -> list[dict[str, Any]]:
    """Processes holding memory outside every configured service, largest first."""
    held = [owner for owner in owners.holders() if owner.unattributed] if owners else []
    return [
        {"pid": o.pid, "command": o.command, "used_mib": o.used_mib, "describe": o.describe()} for o in held
    ]


def _queue(state: GpuState) -> list[dict[str, Any]]:
    entries = []
    for position, lease in enumerate(state.queue, start=1):
        entries.append(
            {
                "position": position,
                "lease_id": str(lease.id),
                "requester": lease.requester,
                "reason": lease.reason,
                "priority": lease.priority,
                "memory_mib": lease.memory_mib,
                "requested_at": _iso(lease.requested_at),
                "expires_at": _iso(lease.expires_at),
                "waiting_for": describe_wait(lease, state),
            }
        )
    return entries


def _one_gpu_status(
    state: GpuState, sampled: telemetry.Telemetry, owners: attribution.Attribution
) -> dict[str, Any]:
    gpu, holder = state.gpu, state.holder
    attributed = owners.gpu(gpu.index)
    return {
        "gpu": gpu.index,
        "uuid": gpu.uuid,
        "name": gpu.name,
        "owner": holder.requester if holder else None,
        "lease_id": str(holder.id) if holder else None,
        "reason": holder.reason if holder else None,
        "acquired_at": _iso(holder.granted_at) if holder else None,
        "expires_at": _iso(holder.expires_at) if holder else None,
        "last_heartbeat_at": _iso(holder.last_heartbeat_at) if holder else None,
        "fencing_token": holder.fencing_token if holder else None,
        "next_fencing_token": gpu.next_fencing_token,
        "memory": _memory(gpu, sampled.gpu(gpu.index), attributed),
        "tenants": _tenants(attributed),
        "telemetry_available": sampled.available,
        "telemetry_reason": sampled.reason,
        "queue": _queue(state),
    }


def gpu_status(gpu: int | None = None) -> dict[str, Any]:
    """Status of one GPU (`gpu` given) or the whole document: seed top-level fields for GPU 0
    (owner, lease_id, reason, acquired_at, memory, queue) plus `gpus`, one entry per GPU.

    Each GPU entry: gpu, uuid, name, owner, lease_id, reason, acquired_at, expires_at,
    last_heartbeat_at, fencing_token, next_fencing_token, memory {total_mb, used_mb, free_mb,
    reserved_mb, by_service_mb, unattributed_mb, attribution_available, attribution_reason},
    tenants [{pid, command, used_mib, describe}] (memory held outside every service),
    telemetry_available, telemetry_reason, queue [{position, lease_id, requester, reason,
    priority, memory_mib, requested_at, expires_at, waiting_for}].
    """
    sampled = telemetry.sample()
    owners = attribution.current(sampled)
    indexes = [each.index for each in sync_gpus(sampled)]
    if gpu is not None:
        if gpu not in indexes:
            raise NotFound(f"GPU {gpu} does not exist.", gpu=gpu)
        return _one_gpu_status(settle(gpu), sampled, owners)
    entries = [_one_gpu_status(settle(index), sampled, owners) for index in indexes]
    first = entries[0] if entries else {}
    seed_fields = ("owner", "lease_id", "reason", "acquired_at", "expires_at", "fencing_token", "memory")
    return {
        **{name: first.get(name) for name in seed_fields},
        "queue": first.get("queue", []),
        "tenants": first.get("tenants", []),
        "telemetry_available": sampled.available,
        "telemetry_reason": sampled.reason,
        "telemetry_backend": sampled.backend,
        "gpus": entries,
    }


FREE_OWNER = "none"  # the seed's owner of a free GPU (gaia-web shows "--" for it)


def seed_gpu_status(gpu: int | None = None) -> dict[str, Any]:
    """gpu_status in the seed's shape, for the seed paths (/gpu/status, /status): the owner of a
    free GPU is "none" instead of null, at the top level and in every GPU entry."""
    document = gpu_status(gpu)
    for entry in [document, *document.get("gpus", [])]:
        if entry["owner"] is None:
            entry["owner"] = FREE_OWNER
    return document
