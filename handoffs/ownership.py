"""Every call handoffs make into the lease service, in one place.

The lease service owns GPUs and leases; a handoff only asks who holds a GPU and moves the lease.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID


@dataclass(frozen=True)
class Holding:
    lease_id: UUID
    requester: str
    fencing_token: int


def _leases():
    from leases import services

    return services


def _holding(lease) -> Holding | None:
    if lease is None:
        return None
    return Holding(lease.id, lease.requester, lease.fencing_token)


def holder(gpu: int) -> Holding | None:
    return _holding(_leases().current_holder(gpu))


def transfer(*, gpu: int, to: str, expected_holder: str, reason: str, actor: str) -> Holding:
    """Move the GPU's lease atomically; Conflict (naming the holder) if someone else holds it."""
    lease = _leases().transfer(
        gpu=gpu, to_requester=to, reason=reason, actor=actor, expected_holder=expected_holder
    )
    return _holding(lease)
