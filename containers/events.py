"""The event types of the containers app (gaiaorch.event_types)."""

from __future__ import annotations

from gaiaorch.event_types import declare

OPERATION = ("operation_id", "services")

DOCKER_AVAILABLE = declare("docker.available", "info", "The Docker Engine answers again.")
DOCKER_UNAVAILABLE = declare(
    "docker.unavailable", "error", "The Docker Engine stopped answering; observed states become unknown."
)
CONTAINER_STATE_CHANGED = declare(
    "container.state_changed",
    "info",
    "A service's container changed state or health (warning when unknown or dead).",
    payload=("service", "stack", "from", "to"),
    also=("warning",),
)
OPERATION_REQUESTED = declare(
    "container.operation_requested",
    "info",
    "A container operation (start, stop, restart, swap...) was requested.",
    payload=(*OPERATION, "params"),
)
OPERATION_STARTED = declare("container.operation_started", "info", "A worker began a container operation.")
OPERATION_RESUMED = declare(
    "container.operation_resumed", "info", "A worker took up a container operation another one left."
)
OPERATION_REQUEUED = declare(
    "container.operation_requeued",
    "warning",
    "A container operation whose worker fell silent was handed to a worker again.",
)
OPERATION_SUCCEEDED = declare(
    "container.operation_succeeded", "info", "A container operation finished.", payload=OPERATION
)
OPERATION_FAILED = declare(
    "container.operation_failed",
    "error",
    "A container operation failed (or was abandoned); a GPU it took is released.",
    payload=OPERATION,
)
CONTAINER_SWAPPED = declare(
    "container.swapped",
    "info",
    "Traffic of a live service now goes to another of its twins.",
    payload=("service", "candidate", "target", "operation_id"),
)

# How an operation ended (OperationStatus) → its event type.
OPERATION_ENDED = {"succeeded": OPERATION_SUCCEEDED, "failed": OPERATION_FAILED}
