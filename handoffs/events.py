"""The event types of GPU handoffs (gaiaorch.event_types)."""

from __future__ import annotations

from gaiaorch.event_types import declare

# Every handoff event carries the handoff (Handoff.event_data).
HANDOFF = ("handoff_id", "handoff_type", "phase", "gpu", "source", "destination")

HANDOFF_STARTED = declare("handoff.started", "info", "A GPU handoff was started.", payload=HANDOFF)
HANDOFF_CANCEL_REQUESTED = declare(
    "handoff.cancel_requested",
    "info",
    "Someone asked a running handoff to stop and roll back.",
    payload=HANDOFF,
)
HANDOFF_RECOVERING = declare(
    "handoff.recovering",
    "warning",
    "The worker driving a handoff stopped; another resumes it from its last persisted phase.",
    payload=HANDOFF,
)
HANDOFF_PHASE_CHANGED = declare(
    "handoff.phase_changed",
    "info",
    "A handoff entered its next phase (warning when it starts rolling back).",
    payload=(*HANDOFF, "previous_phase", "error"),
    also=("warning",),
)
HANDOFF_PHASE_FINISHED = declare(
    "handoff.phase_finished", "info", "A handoff phase succeeded.", payload=(*HANDOFF, "outcome", "figures")
)
HANDOFF_PHASE_FAILED = declare(
    "handoff.phase_failed", "warning", "A handoff phase failed.", payload=(*HANDOFF, "outcome", "figures")
)
HANDOFF_COMPLETED = declare(
    "handoff.completed",
    "info",
    "A handoff completed: the destination holds the GPU (warning when it completed with warnings).",
    payload=(*HANDOFF, "error", "warnings"),
    also=("warning",),
)
HANDOFF_FAILED = declare(
    "handoff.failed",
    "error",
    "A handoff failed; what it rolled back is in its phases.",
    payload=(*HANDOFF, "error", "warnings"),
)
HANDOFF_CANCELLED = declare(
    "handoff.cancelled",
    "warning",
    "A handoff was cancelled and rolled back.",
    payload=(*HANDOFF, "error", "warnings"),
)
HANDOFF_ROLLBACK_INCOMPLETE = declare(
    "handoff.rollback_incomplete",
    "critical",
    "A rollback left the source without its GPU memory; the ticker retries its reclaim.",
    payload=(*HANDOFF, "problems", "reclaim_retried"),
)
HANDOFF_ROLLBACK_RECLAIMED = declare(
    "handoff.rollback_reclaimed",
    "info",
    "A later reclaim gave the source of an incomplete rollback its memory back.",
    payload=(*HANDOFF, "resolution", "attempts"),
)
HANDOFF_ROLLBACK_ACKNOWLEDGED = declare(
    "handoff.rollback_acknowledged",
    "warning",
    "An operator took an incomplete rollback in hand.",
    payload=(*HANDOFF, "resolution", "attempts"),
)
GPU_TENANT_APPEARED = declare(
    "gpu.tenant_appeared",
    "warning",
    "A process outside every configured service holds memory on a GPU.",
    payload=("gpu", "pid", "command", "used_mib"),
)
GPU_TENANT_GONE = declare(
    "gpu.tenant_gone",
    "info",
    "An unknown tenant no longer holds memory on its GPU.",
    payload=("gpu", "pid", "command", "used_mib"),
)

# How a handoff ended (Phase) → its event type; how an incomplete rollback was resolved (Resolution).
HANDOFF_ENDED = {"completed": HANDOFF_COMPLETED, "failed": HANDOFF_FAILED, "cancelled": HANDOFF_CANCELLED}
ROLLBACK_RESOLVED = {"reclaimed": HANDOFF_ROLLBACK_RECLAIMED, "acknowledged": HANDOFF_ROLLBACK_ACKNOWLEDGED}
