"""The GPU lease calls container operations make, in one place (the leases app owns the rules).

- a candidate start with a GPU acquires the GPU for the candidate stack's gpu_requester;
- a live stop releases the live stack's lease;
- a failed candidate start gives back what it acquired.
"""

from __future__ import annotations

from dataclasses import dataclass

from gaiaorch.errors import Conflict, NotFound
from leases import services as leases


@dataclass(frozen=True)
class Holder:
    lease_id: str
    requester: str
    fencing_token: int | None


def current_holder(gpu: int) -> Holder | None:
    lease = leases.current_holder(gpu)
    if lease is None:
        return None
    return Holder(str(lease.id), lease.requester, getattr(lease, "fencing_token", None))


def acquire(*, requester: str, gpu: int, reason: str, memory_mib: int | None, actor: str) -> Holder:
    """Take the GPU for `requester` now, or refuse with 409 naming who holds it."""
    holder = current_holder(gpu)
    if holder and holder.requester != requester:
        raise Conflict(
            f"GPU {gpu} is held by {holder.requester}; release it (stop the live stack) first.",
            code="gpu_held",
            holder=holder.requester,
            lease_id=holder.lease_id,
            gpu=gpu,
        )
    if holder:
        return holder
    result = leases.acquire(requester=requester, reason=reason, gpu=gpu, memory_mib=memory_mib, actor=actor)
    if not result.granted:
        raise Conflict(
            f"GPU {gpu} is not free for {requester}: {result.waiting_for}.",
            code="gpu_held",
            holder=holder.requester if holder else None,
            waiting_for=result.waiting_for,
            gpu=gpu,
        )
    return Holder(str(result.lease.id), result.lease.requester, getattr(result.lease, "fencing_token", None))


def release_if_held(*, requester: str, gpu: int, reason: str, actor: str) -> Holder | None:
    """Release the GPU when `requester` holds it; returns the released lease, if any."""
    holder = current_holder(gpu)
    if holder is None or holder.requester != requester:
        return None
    leases.release(holder.lease_id, actor=actor, reason=reason)
    return holder


def release(lease_id: str, *, reason: str, actor: str) -> bool:
    """Give back a lease an operation took; False when it had already ended (expired, revoked)."""
    try:
        leases.release(lease_id, actor=actor, reason=reason)
    except (Conflict, NotFound):
        return False
    return True
