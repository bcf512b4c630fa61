"""Every call handoffs make into the lease app, in one place.

The lease service owns GPUs and leases; a handoff asks who holds a GPU, moves the lease, and
reads the idle baseline the lease app measured while answering /gpu/status.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from leases import services as leases
from leases.models import Gpu


@dataclass(frozen=True)
class Holding:
    lease_id: UUID
    requester: str
    fencing_token: int


def _holding(lease) -> Holding | None:
    if lease is None:
        return None
    return Holding(lease.id, lease.requester, lease.fencing_token)


def holder(gpu: int) -> Holding | None:
    return _holding(leases.current_holder(gpu))


def transfer(*, gpu: int, to: str, expected_holder: str, reason: str, actor: str) -> Holding:
    """Move the GPU's lease atomically; Conflict (naming the holder) if someone else holds it."""
    lease = leases.transfer(
        gpu=gpu, to_requester=to, reason=reason, actor=actor, expected_holder=expected_holder
    )
    return _holding(lease)


def idle_baseline_seen_by_leases(gpu: int) -> int | None:
    return Gpu.objects.filter(index=gpu).values_list("baseline_mib", flat=True).first()


def take_if_free(*, gpu: int, requester: str, reason: str, actor: str) -> Holding | None:
    """Grant the GPU to `requester` if nobody holds it and nobody waits; never leave it queued."""
    result = leases.acquire(requester=requester, reason=reason, gpu=gpu, actor=actor)
    if result.granted:
        return _holding(result.lease)
    if result.created:
        leases.cancel(result.lease.id, actor=actor, reason="a handoff rollback does not queue")
    return None
