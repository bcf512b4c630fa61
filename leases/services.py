"""GPU lease rules: the only code that changes Gpu and Lease rows.

Every decision about a GPU (grant, release, expire, revoke, transfer) runs in one transaction
holding that GPU's row lock, writes its audit event inside that transaction, and grants the next
eligible waiter before committing. Public functions take keyword arguments and are stable: other
apps (handoffs, containers) call acquire, release, transfer, current_holder and gpu_status.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from gaiaorch import telemetry
from gaiaorch.errors import Conflict, InvalidRequest, NotFound
from leases.models import Gpu, Lease, LeaseStatus
from notifications.models import Severity
from notifications.services import record_event

REAPER = "lease-reaper"
WAIT_POLL_SECONDS = 0.1

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
    """Requester names are the service keys of the configuration."""
    return sorted((settings.GAIAORCH or {}).get("services") or {})


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
    for attempt in range(2):
        gpu = Gpu.objects.select_for_update().filter(index=index, present=True).first()
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


def _locked_lease(lease_id: Any) -> Lease:
    """The lease, read again under its GPU's lock so its status cannot change under us."""
    gpu = _locked_gpu(_lease_gpu_index(lease_id))
    lease = Lease.objects.get(pk=lease_id)
    lease.gpu = gpu
    return lease


# ---------------------------------------------------------------- queue views


def _holder(gpu: Gpu) -> Lease | None:
    return Lease.objects.active().filter(gpu=gpu).first()


def queue_position(lease: Lease) -> int | None:
    if lease.status != LeaseStatus.WAITING:
        return None
    ahead = Lease.objects.waiting().filter(gpu_id=lease.gpu_id)
    ahead = ahead.filter(priority__gt=lease.priority) | ahead.filter(
        priority=lease.priority, arrival__lt=lease.arrival
    )
    return ahead.count() + 1


def describe_wait(lease: Lease, position: int | None, holder: Lease | None) -> str:
    """A human sentence saying what a waiter waits for."""
    if lease.status != LeaseStatus.WAITING or position is None:
        return ""
    gpu = lease.gpu.index
    held = f"GPU {gpu} is held by {holder.requester}" if holder else ""
    if position > 1:
        ahead = f"{position - 1} request{'s' if position > 2 else ''} ahead in the queue for GPU {gpu}"
        return f"{ahead}; {held}" if held else ahead
    return held or lease.waiting_for or f"the next grant of GPU {gpu}"


def _result(lease: Lease, created: bool = False) -> AcquireResult:
    position = queue_position(lease)
    holder = _holder(lease.gpu) if position else None
    return AcquireResult(
        lease=lease,
        granted=lease.status == LeaseStatus.ACTIVE,
        queue_position=position,
        waiting_for=describe_wait(lease, position, holder),
        created=created,
    )


# ---------------------------------------------------------------- transitions (under the GPU lock)


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


def _expiry(lease: Lease, now: datetime) -> datetime | None:
    return now + timedelta(seconds=lease.ttl_seconds) if lease.ttl_seconds else None


def _new_lease(gpu: Gpu, **fields: Any) -> Lease:
    now = timezone.now()
    ttl = fields.pop("ttl_seconds", None) or settings.LEASE_DEFAULT_TTL_SECONDS
    lease = Lease(gpu=gpu, arrival=gpu.next_arrival, requested_at=now, ttl_seconds=ttl, **fields)
    # A waiting entry with a TTL must show signs of life too, so a crashed client leaves no ghost.
    lease.expires_at = _expiry(lease, now)
    lease.save(force_insert=True)
    gpu.next_arrival += 1
    gpu.save(update_fields=["next_arrival"])
    return lease


def _grant(gpu: Gpu, lease: Lease, actor: str, **data: Any) -> None:
    now = timezone.now()
    lease.status = LeaseStatus.ACTIVE
    lease.fencing_token = gpu.next_fencing_token
    lease.granted_at = lease.last_heartbeat_at = now
    lease.expires_at = _expiry(lease, now)
    lease.waiting_for = ""
    lease.save()
    # The counter lives on the locked Gpu row and only goes up: tokens are never reused, even
    # after every lease row of the GPU is deleted or the process restarts.
    gpu.next_fencing_token += 1
    gpu.save(update_fields=["next_fencing_token"])
    _event(lease, "granted", actor, **data)


def _end(lease: Lease, status: str, actor: str, reason: str = "", **data: Any) -> None:
    lease.status = status
    lease.ended_at = timezone.now()
    lease.ended_by = actor[:150]
    lease.end_reason = reason[:500]
    lease.waiting_for = ""
    lease.save()
    _event(lease, status, actor, reason, **data)


def _memory_blocker(gpu: Gpu, lease: Lease) -> str:
    """Why measured memory forbids granting `lease` now ("" when it may be granted)."""
    if lease.memory_mib is None:
        return ""
    sampled = telemetry.sample().gpu(gpu.index)
    if sampled is None or sampled.free_mib >= lease.memory_mib:
        return ""  # without telemetry there is nothing to measure: admission by queue order only
    return (
        f"{lease.memory_mib} MiB free needed, {sampled.free_mib} MiB free: "
        f"{sampled.used_mib / 1024:.1f} GiB in use on GPU {gpu.index} by processes outside any lease"
    )


def _grant_next(gpu: Gpu, actor: str) -> Lease | None:
    """Give a free GPU to the head of its queue, if measured memory allows. Strict order:
    a blocked head blocks everyone behind it, so a newcomer never overtakes a waiter."""
    if _holder(gpu) is not None:
        return None
    head = Lease.objects.waiting().filter(gpu=gpu).in_grant_order().first()
    if head is None:
        return None
    head.gpu = gpu
    blocker = _memory_blocker(gpu, head)
    if blocker:
        if head.waiting_for != blocker:
            head.waiting_for = blocker[:300]
            head.save(update_fields=["waiting_for"])
        return None
    _grant(gpu, head, actor)
    return head


# ---------------------------------------------------------------- housekeeping


def expire_due(*, gpu: int | None = None, actor: str = REAPER) -> list[Lease]:
    """End every live lease past its expiry (holders and waiters) and grant the next waiters."""
    overdue = Lease.objects.live().filter(expires_at__lte=timezone.now())
    if gpu is not None:
        overdue = overdue.filter(gpu__index=gpu)
    expired: list[Lease] = []
    for index in set(overdue.values_list("gpu__index", flat=True)):
        with transaction.atomic():
            locked = _locked_gpu(index)
            # Read again under the lock: a heartbeat may have renewed it meanwhile.
            for lease in Lease.objects.live().filter(gpu=locked, expires_at__lte=timezone.now()):
                lease.gpu = locked
                _end(lease, LeaseStatus.EXPIRED, actor, "not renewed within its TTL")
                expired.append(lease)
            _grant_next(locked, actor)
    return expired


def admit_waiting(*, gpu: int | None = None, actor: str = REAPER) -> list[Lease]:
    """Grant free GPUs whose queue head waited for memory (telemetry changes outside any lease)."""
    free = Gpu.objects.filter(present=True, leases__status=LeaseStatus.WAITING).exclude(
        leases__status=LeaseStatus.ACTIVE
    )
    if gpu is not None:
        free = free.filter(index=gpu)
    granted = []
    for index in set(free.values_list("index", flat=True)):
        with transaction.atomic():
            lease = _grant_next(_locked_gpu(index), actor)
        if lease:
            granted.append(lease)
    return granted


def settle(gpu: int) -> None:
    """Lazy housekeeping before a read: expire what is overdue, admit a waiter on a free GPU."""
    live = list(Lease.objects.live().filter(gpu__index=gpu).values_list("status", "expires_at"))
    now = timezone.now()
    if any(expires_at and expires_at <= now for _, expires_at in live):
        expire_due(gpu=gpu)
    statuses = {status for status, _ in live}
    if LeaseStatus.WAITING in statuses and LeaseStatus.ACTIVE not in statuses:
        admit_waiting(gpu=gpu)


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
    settle(gpu)
    with transaction.atomic():
        locked = _locked_gpu(gpu)
        existing = Lease.objects.live().filter(gpu=locked, requester=requester).first()
        if existing is not None:
            existing.gpu = locked
            _renew(existing)
            return _result(existing)
        lease = _new_lease(
            locked,
            requester=requester,
            reason=reason[:500],
            priority=priority,
            ttl_seconds=ttl_seconds,
            memory_mib=memory_mib,
        )
        _event(lease, "requested", actor, priority=priority, memory_mib=memory_mib)
        _grant_next(locked, actor)
        lease.refresh_from_db()
        lease.gpu = locked
        return _result(lease, created=True)


def _renew(lease: Lease) -> None:
    now = timezone.now()
    lease.last_heartbeat_at = now
    lease.expires_at = _expiry(lease, now)
    lease.save(update_fields=["last_heartbeat_at", "expires_at"])


def _ended_conflict(lease: Lease) -> Conflict:
    holder = _holder(lease.gpu)
    return Conflict(
        f"Lease {lease.id} is already {lease.status}.",
        lease_id=str(lease.id),
        status=lease.status,
        holder=holder.requester if holder else None,
    )


def release(lease_id: Any, *, actor: str, reason: str = "") -> Lease:
    """End an active lease (or withdraw a waiting entry) and grant the next waiter."""
    settle(_lease_gpu_index(lease_id))
    with transaction.atomic():
        lease = _locked_lease(lease_id)
        if lease.status == LeaseStatus.ACTIVE:
            _end(lease, LeaseStatus.RELEASED, actor, reason)
        elif lease.status == LeaseStatus.WAITING:
            _end(lease, LeaseStatus.CANCELLED, actor, reason or "released while waiting")
        else:
            raise _ended_conflict(lease)
        _grant_next(lease.gpu, actor)
        return lease


def heartbeat(lease_id: Any, *, actor: str) -> Lease:
    """Renew a live lease's TTL. An expired lease is gone: acquire again."""
    settle(_lease_gpu_index(lease_id))
    with transaction.atomic():
        lease = _locked_lease(lease_id)
        if not lease.is_live:
            raise _ended_conflict(lease)
        _renew(lease)
        return lease


def revoke(lease_id: Any, *, actor: str, reason: str) -> Lease:
    """An operator takes a lease away (holder or waiter); the next waiter is granted."""
    if not reason.strip():
        raise InvalidRequest("A revoke needs a reason.", fields={"reason": ["this field is required"]})
    with transaction.atomic():
        lease = _locked_lease(lease_id)
        if not lease.is_live:
            raise _ended_conflict(lease)
        _end(lease, LeaseStatus.REVOKED, actor, reason)
        _grant_next(lease.gpu, actor)
        return lease


def cancel(lease_id: Any, *, actor: str, reason: str = "") -> Lease:
    """Withdraw a waiting entry from the queue."""
    with transaction.atomic():
        lease = _locked_lease(lease_id)
        if lease.status == LeaseStatus.ACTIVE:
            raise Conflict(
                f"Lease {lease.id} holds GPU {lease.gpu.index}; release it instead of cancelling.",
                lease_id=str(lease.id),
                status=lease.status,
            )
        if not lease.is_live:
            raise _ended_conflict(lease)
        _end(lease, LeaseStatus.CANCELLED, actor, reason or "withdrawn")
        _grant_next(lease.gpu, actor)
        return lease


def check(lease_id: Any, *, renew: bool = False) -> AcquireResult:
    """Where a lease stands now (after lazy expiry and admission); `renew` keeps a waiter alive."""
    settle(_lease_gpu_index(lease_id))
    lease = Lease.objects.select_related("gpu").get(pk=lease_id)
    if renew and lease.status == LeaseStatus.WAITING and _renewal_due(lease):
        with transaction.atomic():
            lease = _locked_lease(lease_id)
            if lease.is_live:
                _renew(lease)
    return _result(lease)


def _renewal_due(lease: Lease) -> bool:
    # Renew at half-life only, so a long-polling waiter writes rarely.
    if lease.expires_at is None:
        return False
    return lease.expires_at - timezone.now() < timedelta(seconds=lease.ttl_seconds / 2)


async def wait(
    lease_id: Any, *, timeout_seconds: float, poll_seconds: float = WAIT_POLL_SECONDS
) -> AcquireResult:
    """Poll until the lease is no longer waiting or the timeout passes; holds no thread between polls."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        result = await sync_to_async(check)(lease_id, renew=True)
        remaining = deadline - time.monotonic()
        if result.lease.status != LeaseStatus.WAITING or remaining <= 0:
            return result
        await asyncio.sleep(min(poll_seconds, remaining))


def transfer(
    *, gpu: int, to_requester: str, reason: str, actor: str, expected_holder: str | None = None
) -> Lease:
    """Atomically end the GPU's active lease (if any) and grant a new one to `to_requester`,
    bypassing the queue. With `expected_holder`, refuse (409) unless that requester holds it."""
    check_requester(to_requester)
    settle(gpu)
    with transaction.atomic():
        locked = _locked_gpu(gpu)
        current = _holder(locked)
        if expected_holder is not None and (current is None or current.requester != expected_holder):
            holder = current.requester if current else None
            raise Conflict(
                f"GPU {gpu} is held by {holder or 'nobody'}, not {expected_holder}.",
                code="holder_mismatch",
                gpu=gpu,
                holder=holder,
                lease_id=str(current.id) if current else None,
            )
        previous = current.requester if current else None
        if current is not None:
            current.gpu = locked
            _end(current, LeaseStatus.RELEASED, actor, f"transferred to {to_requester}: {reason}")
        pending = Lease.objects.waiting().filter(gpu=locked, requester=to_requester).first()
        if pending is not None:
            pending.gpu = locked
            _end(pending, LeaseStatus.CANCELLED, actor, "superseded by a transfer of the GPU")
        lease = _new_lease(locked, requester=to_requester, reason=reason[:500])
        _grant(locked, lease, actor, transfer=True, previous_holder=previous)
        return lease


def current_holder(gpu: int) -> Lease | None:
    settle(gpu)
    return Lease.objects.active().select_related("gpu").filter(gpu__index=gpu).first()


def get_lease(lease_id: Any) -> Lease:
    settle(_lease_gpu_index(lease_id))
    return Lease.objects.select_related("gpu").get(pk=lease_id)


# ---------------------------------------------------------------- status


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _configured_baseline() -> int | None:
    return ((settings.GAIAORCH or {}).get("gpu") or {}).get("baseline_mib")


def _memory(gpu: Gpu, sampled: telemetry.GpuSample | None, held: bool) -> dict[str, int | None]:
    if sampled is not None and not held and (gpu.baseline_mib is None or sampled.used_mib < gpu.baseline_mib):
        # The idle baseline is the least memory ever measured with no lease active.
        gpu.baseline_mib = sampled.used_mib
        Gpu.objects.filter(pk=gpu.pk).update(baseline_mib=sampled.used_mib)
    return {
        "total_mb": sampled.total_mib if sampled else gpu.total_mib,
        "used_mb": sampled.used_mib if sampled else None,
        "free_mb": sampled.free_mib if sampled else None,
        "baseline_mb": _configured_baseline() or gpu.baseline_mib,
    }


def _queue(gpu: Gpu, holder: Lease | None) -> list[dict[str, Any]]:
    entries = []
    for position, lease in enumerate(Lease.objects.waiting().filter(gpu=gpu).in_grant_order(), start=1):
        lease.gpu = gpu
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
                "waiting_for": describe_wait(lease, position, holder),
            }
        )
    return entries


def _one_gpu_status(gpu: Gpu, sampled: telemetry.Telemetry) -> dict[str, Any]:
    holder = _holder(gpu)
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
        "memory": _memory(gpu, sampled.gpu(gpu.index), held=holder is not None),
        "telemetry_available": sampled.available,
        "telemetry_reason": sampled.reason,
        "queue": _queue(gpu, holder),
    }


def gpu_status(gpu: int | None = None) -> dict[str, Any]:
    """Status of one GPU (`gpu` given) or the whole document: seed top-level fields for GPU 0
    (owner, lease_id, reason, acquired_at, memory, queue) plus `gpus`, one entry per GPU.

    Each GPU entry: gpu, uuid, name, owner, lease_id, reason, acquired_at, expires_at,
    last_heartbeat_at, fencing_token, next_fencing_token, memory {total_mb, used_mb, free_mb,
    baseline_mb}, telemetry_available, telemetry_reason, queue [{position, lease_id, requester,
    reason, priority, memory_mib, requested_at, expires_at, waiting_for}].
    """
    sampled = telemetry.sample()
    gpus = sync_gpus(sampled)
    for each in gpus:
        settle(each.index)
    if gpu is not None:
        match = next((each for each in gpus if each.index == gpu), None)
        if match is None:
            raise NotFound(f"GPU {gpu} does not exist.", gpu=gpu)
        return _one_gpu_status(match, sampled)
    entries = [_one_gpu_status(each, sampled) for each in gpus]
    first = entries[0] if entries else {}
    seed_fields = ("owner", "lease_id", "reason", "acquired_at", "expires_at", "fencing_token", "memory")
    return {
        **{name: first.get(name) for name in seed_fields},
        "queue": first.get("queue", []),
        "telemetry_available": sampled.available,
        "telemetry_reason": sampled.reason,
        "gpus": entries,
    }
