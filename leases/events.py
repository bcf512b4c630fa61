"""The event types of GPU leases (gaiaorch.event_types): one per lease transition, and GPU presence."""

from __future__ import annotations

from gaiaorch.event_types import declare

# Every lease event carries the lease as it stands after the transition.
LEASE = ("lease_id", "requester", "gpu", "status", "fencing_token", "reason")

LEASE_REQUESTED = declare(
    "lease.requested",
    "info",
    "A requester asked for a GPU and joined its queue (asked for any GPU: the one chosen, and why).",
    payload=(*LEASE, "priority", "memory_mib"),
    optional=("asked_gpu", "choice"),
)
LEASE_GRANTED = declare(
    "lease.granted",
    "info",
    "A lease was granted: its requester holds the GPU (standing: as its resident; transfer: handed over).",
    payload=LEASE,
    optional=("standing", "transfer", "previous_holder"),
)
LEASE_RELEASED = declare("lease.released", "info", "A holder released its GPU.", payload=LEASE)
LEASE_EXPIRED = declare(
    "lease.expired", "warning", "A lease or waiting entry outlived its TTL and was ended.", payload=LEASE
)
LEASE_UNCLAIMED = declare(
    "lease.unclaimed",
    "warning",
    "A grant nobody claimed in time was passed on to the next waiter.",
    payload=LEASE,
)
LEASE_REVOKED = declare("lease.revoked", "warning", "An operator revoked a lease.", payload=LEASE)
LEASE_CANCELLED = declare(
    "lease.cancelled", "info", "A waiter left the queue (withdrawn, gave up, superseded).", payload=LEASE
)
GPU_APPEARED = declare(
    "gpu.appeared",
    "info",
    "Telemetry reports a GPU that was not present before.",
    payload=("gpu", "uuid", "name", "total_mib"),
)
GPU_DISAPPEARED = declare(
    "gpu.disappeared",
    "warning",
    "Working telemetry no longer reports a GPU that was present.",
    payload=("gpu", "uuid", "name"),
)

# Lease transitions (leases.services) by the name the lease rules use for them.
TRANSITIONS = {
    "requested": LEASE_REQUESTED,
    "granted": LEASE_GRANTED,
    "standing": LEASE_GRANTED,  # a standing grant is a grant, marked standing
    "released": LEASE_RELEASED,
    "expired": LEASE_EXPIRED,
    "unclaimed": LEASE_UNCLAIMED,
    "revoked": LEASE_REVOKED,
    "cancelled": LEASE_CANCELLED,
}
