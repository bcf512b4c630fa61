"""The lease service as the apps above it use it: who holds a GPU, and moving its lease, as values.

Container operations take a GPU for the candidate stack and give it back when a stack stops or
a start fails; handoffs move a GPU's lease from one requester to another. leases.services owns
the rules; this module only asks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import overload
from uuid import UUID

from gaiaorch.errors import Conflict, NotFound
from leases import services as leases
from leases.models import Lease


@dataclass(frozen=True)
class Holding:
    """A granted lease: who holds the GPU, under which lease, with which fencing token."""

    lease_id: UUID
    requester: str
    fencing_token: int | None


@overload
def _holding(lease: Lease) -> Holding: ...
@overload
def _holding(lease: Lease | None) -> Holding | None: ...
def _holding(lease: Lease | None) -> Holding | None:
    return None if lease is None else Holding(lease.id, lease.requester, lease.fencing_token)


def current_holder(gpu: int) -> Holding | None:
    return _holding(leases.current_holder(gpu))


def acquire_or_refuse(
    *,
    requester: str,
    gpu: int,
    reason: str,
    actor: str,
    memory_mib: int | None = None,
    remedy: str = "it must be released first",
) -> Holding:
    """The GPU for `requester` now (or the lease it holds already); 409 naming the holder otherwise."""
    holding = current_holder(gpu)
    if holding is not None and holding.requester != requester:
        raise Conflict(
            f"GPU {gpu} is held by {holding.requester}; {remedy}.",
            code="gpu_held",
            holder=holding.requester,
            lease_id=str(holding.lease_id),
            gpu=gpu,
        )
    if holding is not None:
        return holding
    result = leases.acquire(requester=requester, reason=reason, gpu=gpu, memory_mib=memory_mib, actor=actor)
    if not result.granted:
        _withdraw_if_queued_now(result, actor)
        raise Conflict(
            f"GPU {gpu} is not free for {requester}: {result.waiting_for}.",
            code="gpu_held",
            holder=None,
            waiting_for=result.waiting_for,
            gpu=gpu,
        )
    return _holding(result.lease)


def take_if_free(*, gpu: int, requester: str, reason: str, actor: str) -> Holding | None:
    """Grant the GPU to `requester` if nobody holds it and nobody waits; never leave it queued."""
    result = leases.acquire(requester=requester, reason=reason, gpu=gpu, actor=actor)
    if result.granted:
        return _holding(result.lease)
    _withdraw_if_queued_now(result, actor)
    return None


def _withdraw_if_queued_now(result: leases.AcquireResult, actor: str) -> None:
    """An ask for "now or not at all" must not stay in the queue it just joined."""
    if result.created:
        leases.cancel(result.lease.id, actor=actor, reason="asked for the GPU now or not at all")


def release_if_held(*, requester: str, gpu: int, reason: str, actor: str) -> Holding | None:
    """Release the GPU when `requester` holds it; returns the released lease, if any."""
    holding = current_holder(gpu)
    if holding is None or holding.requester != requester:
        return None
    leases.release(holding.lease_id, actor=actor, reason=reason)
    return holding


def release(lease_id: UUID | str, *, reason: str, actor: str) -> bool:
    """Give back a lease; False when it had already ended (expired, revoked, released)."""
    try:
        leases.release(lease_id, actor=actor, reason=reason)
    except (Conflict, NotFound):
        return False
    return True


def transfer(*, gpu: int, to: str, expected_holder: str, reason: str, actor: str) -> Holding:
    """Move the GPU's lease atomically; Conflict (naming the holder) if someone else holds it."""
    lease = leases.transfer(
        gpu=gpu, to_requester=to, reason=reason, actor=actor, expected_holder=expected_holder
    )
    return _holding(lease)
