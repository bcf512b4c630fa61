"""The only code that changes container rows: reality, operations and their steps, swaps.

Each public function is one transaction and writes its audit event inside it. Docker is driven
by containers.runner (operations) and containers.reality (observation); the only Docker call made
here is the ping that admits an operation, before its transaction opens. Operations are claimed
jobs of gaiaorch.jobs (OPERATIONS below): the runner's claim writes their step rows.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeGuard

from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from containers import events
from containers.engine import DockerUnavailable, Engine
from containers.models import (
    Container,
    DockerStatus,
    Operation,
    OperationKind,
    OperationStatus,
    OperationStep,
    State,
    Swap,
    SwapTarget,
)
from gaiaorch import config as gaiaorch_config
from gaiaorch import jobs, queues, telemetry
from gaiaorch.config import Config, Service
from gaiaorch.errors import Conflict, InvalidRequest, NotFound, Unavailable
from gaiaorch.statements import CompiledRead
from leases import holdings
from notifications.models import Severity
from notifications.services import record_event

# A worker beats every HEARTBEAT_SECONDS; one silent for STALE_AFTER_SECONDS is presumed dead.
HEARTBEAT_SECONDS = 2.0
STALE_AFTER_SECONDS = 15.0
RECOVERY_INTERVAL_SECONDS = 5.0
MAX_ATTEMPTS = 2  # an operation is handed to a worker at most this often (first run + one resume)
PING_TIMEOUT_SECONDS = 3.0
DEADLINE_SLACK_SECONDS = 60  # on top of the services' own stop and health timeouts

STACK_KINDS = {
    OperationKind.LIVE_STOP: ("live", "stop"),
    OperationKind.LIVE_START: ("live", "start"),
    OperationKind.CANDIDATE_START: ("candidate", "start"),
    OperationKind.CANDIDATE_STOP: ("candidate", "stop"),
}
SERVICE_KINDS = {
    OperationKind.SERVICE_START: "start",
    OperationKind.SERVICE_STOP: "stop",
    OperationKind.SERVICE_RESTART: "restart",
    OperationKind.SERVICE_KILL: "kill",
}


def enqueue(operation_id: int) -> None:
    """Hand an operation to the worker pool (tests replace this with a thread or a direct call).

    Never raises: the operation is committed. When the queue refuses the task, the hand-over is
    taken back (attempts - 1); an operation with no attempt is queued by recovery at its next tick.
    """
    if not queues.enqueue(
        "containers.tasks.run_operation", operation_id, task_name=f"container-operation-{operation_id}"
    ):
        Operation.objects.filter(pk=operation_id, attempts__gt=0).update(attempts=F("attempts") - 1)


# --- Docker reality ------------------------------------------------------------------------


# The status reads, compiled once (gaiaorch.statements): a poll of /status pays only their statements.
_DOCKER_STATUS = CompiledRead(lambda: DockerStatus.objects.filter(pk=1))
_CONTAINERS = CompiledRead(lambda: Container.objects.all())
_ACTIVE_OPERATION = CompiledRead(lambda: Operation.objects.filter(status__in=OperationStatus.active())[:1])
_CANDIDATE_SWAPS = CompiledRead(lambda: Swap.objects.filter(target=SwapTarget.CANDIDATE))


def _docker_status() -> DockerStatus:
    found = _DOCKER_STATUS.models()
    return found[0] if found else DockerStatus.objects.get_or_create(pk=1)[0]


def docker_reachable(*, reachable: bool, error: str = "") -> None:
    """Record whether Docker answered; when it did not, every observed state becomes unknown."""
    with transaction.atomic():
        # why: two reality passes must not both see the change and both write its event.
        status = DockerStatus.objects.select_for_update().get_or_create(pk=1)[0]
        changed = status.available != reachable
        status.available, status.error, status.checked_at = reachable, error, timezone.now()
        status.save()
        if changed:
            kind = events.DOCKER_AVAILABLE if reachable else events.DOCKER_UNAVAILABLE
            title = "Docker is reachable" if reachable else "Docker is unreachable"
            severity = Severity.INFO if reachable else Severity.ERROR
            record_event(kind, title, error, severity=severity, subject=("docker", "engine"))
        if not reachable:
            for row in Container.objects.exclude(state=State.UNKNOWN):
                _change(row, {"state": State.UNKNOWN, "health": ""}, reason=error)


def record_observation(service: Service, observed: dict[str, Any]) -> bool:
    """Store what Docker says about one service's container; True when something changed."""
    with transaction.atomic():
        row = _row_for_update(service)
        row.last_seen_at = timezone.now()
        fields = {**observed, "started_at": _as_datetime(observed.get("started_at"))}
        changed = _change(row, fields)
        if not changed:
            row.save(update_fields=["last_seen_at"])
        return changed


def _row_for_update(service: Service) -> Container:
    # Row lock: the event follower and the periodic reconcile may observe the same container.
    row, _ = Container.objects.select_for_update().get_or_create(
        service=service.name, defaults={"stack": service.stack, "role": service.role}
    )
    return row


def _as_datetime(value):
    return parse_datetime(value) if isinstance(value, str) else value


WATCHED = ("container_id", "state", "health", "device_requests", "image", "name")


def _change(row: Container, fields: dict[str, Any], reason: str = "") -> bool:
    before = {name: getattr(row, name) for name in WATCHED}
    for name, value in fields.items():
        setattr(row, name, value)
    after = {name: getattr(row, name) for name in WATCHED}
    if before == after:
        return False
    row.changed_at = timezone.now()
    row.save()
    record_event(
        events.CONTAINER_STATE_CHANGED,
        f"{row.service}: {before['state']} -> {row.state}" + (f" ({row.health})" if row.health else ""),
        reason,
        severity=Severity.WARNING if row.state in (State.UNKNOWN, State.DEAD) else Severity.INFO,
        data={"service": row.service, "stack": row.stack, "from": before, "to": after},
        subject=("container", row.service),
    )
    return True


# --- status --------------------------------------------------------------------------------


def docker_availability(config: Config) -> tuple[bool, str]:
    """Docker's reachability as last recorded; a record nobody refreshed lately counts as unknown."""
    status = _docker_status()
    if not status.available:
        return False, status.error or "Docker has not been reached yet"
    limit = timedelta(seconds=max(3 * config.docker.reconcile_interval_seconds, 10))
    if status.checked_at is None or timezone.now() - status.checked_at > limit:
        return False, "Docker has not been checked lately: is the ticker (manage.py ticker) running?"
    return True, ""


def status() -> dict[str, Any]:
    """Everything an operator needs, from the database alone (no Docker round trip)."""
    config = gaiaorch_config.current()
    available, error = docker_availability(config)
    managed = config.containers()
    rows = {row.service: row for row in _CONTAINERS.models()}  # a row per service Docker reported
    services = [_service_status(service, rows.get(service.name), available) for service in managed]
    stacks: dict[str, dict[str, Any]] = {stack: {} for stack in gaiaorch_config.STACKS}
    for entry in services:
        stacks[entry["stack"]][_stack_key(entry)] = entry["state"]
    active = next(iter(_ACTIVE_OPERATION.models()), None)
    return {
        "docker_available": available,
        "docker_error": error,
        **stacks,
        "services": services,
        "swaps": [_swap_dict(swap) for swap in _CANDIDATE_SWAPS.models()],
        "active_operation": operation_summary(active) if active else None,
    }


def _stack_key(entry: dict[str, Any]) -> str:
    return entry["role"] or entry["service"]


# The seed's container states (running, stopped, starting, stopping, unknown) for Docker's.
SEED_STATES = {
    State.RUNNING: "running",
    State.EXITED: "stopped",
    State.CREATED: "stopped",
    State.DEAD: "stopped",
    State.ABSENT: "stopped",
    State.RESTARTING: "starting",
    State.PAUSED: "starting",
    State.REMOVING: "stopping",
    State.UNKNOWN: "unknown",
}


def seed_status() -> dict[str, Any]:
    """status() in the seed's shape, for the seed paths (/containers/status, /status): `live` and
    `candidate` map each role to {name, state, port, healthy, last_check}. healthy means running
    with a passing Docker health check; last_check is when Docker was last asked."""
    document = status()
    for stack in gaiaorch_config.STACKS:
        document[stack] = {
            _stack_key(entry): {
                "name": entry["service"],
                "state": SEED_STATES[entry["state"]],
                "port": entry["port"],
                "healthy": entry["state"] == State.RUNNING and entry["health"] == "healthy",
                "last_check": entry["last_seen_at"],
            }
            for entry in document["services"]
            if entry["stack"] == stack
        }
    return document


def _service_status(service: Service, row: Container | None, available: bool) -> dict[str, Any]:
    # A service Docker never reported still answers every field (empty), as the schema promises.
    observed = (row or Container(service=service.name)).observed()
    entry = {
        "service": service.name,
        "stack": service.stack,
        "role": service.role,
        **observed,
        "state": row.state if row and available else State.UNKNOWN,
        "health": row.health if row and available else "",
        "last_seen_at": row.last_seen_at if row else None,
        "gpu": service.gpu,
        "vram_mib": list(service.vram_mib),
        "port": service.port,
    }
    return entry


def _swap_dict(swap: Swap) -> dict[str, Any]:
    return {
        "service": swap.service,
        "candidate": swap.candidate,
        "target": swap.target,
        "changed_at": swap.changed_at,
        "changed_by": swap.changed_by,
    }


# --- requesting operations -----------------------------------------------------------------


def request_stack_operation(
    kind: str, *, actor: str, gpu_enabled: bool = False, reason: str = ""
) -> Operation:
    stack, action = STACK_KINDS[OperationKind(kind)]
    config = gaiaorch_config.current()
    targets = config.stack_services(stack)
    plan = config.start_order(targets) if action == "start" else config.stop_order(targets)
    params = {"stack": stack, "action": action, "gpu_enabled": bool(gpu_enabled and action == "start")}
    return _request(kind, plan, params, actor=actor, reason=reason)


def request_service_operation(kind: str, names: list[str], *, actor: str, reason: str = "") -> Operation:
    """Start, stop or restart some configured services (with their dependencies / dependents), or
    kill them (those alone: the last resort of a release ladder, after a stop that took the rest)."""
    config = gaiaorch_config.current()
    targets = [_configured(config, name) for name in names]
    action = SERVICE_KINDS[OperationKind(kind)]
    plans: dict[str, Callable[[list[Service]], list[Service]]] = {"start": config.start_order, "kill": list}
    plan = plans.get(action, config.stop_order)(targets)
    params = {"action": action, "targets": [service.name for service in targets], "gpu_enabled": False}
    return _request(kind, plan, params, actor=actor, reason=reason)


def request_swap(service_name: str, target: str, *, actor: str, reason: str = "") -> Operation:
    config = gaiaorch_config.current()
    live, candidate = swap_pair(config, service_name)
    if target not in SwapTarget.values:
        raise InvalidRequest(
            f"target must be one of {SwapTarget.values}, got {target!r}.",
            fields={"target": ["unknown target"]},
        )
    if not config.docker.network:
        raise InvalidRequest("Swaps need docker.network (the network callers share) in the configuration.")
    params = {
        "action": "swap",
        "live": live.name,
        "candidate": candidate.name,
        "target": target,
        "gpu_enabled": False,
    }
    return _request(OperationKind.SWAP, [live, candidate], params, actor=actor, reason=reason)


def swap_pair(config: Config, name: str) -> tuple[Service, Service]:
    """(live, candidate) for a live name, a candidate name or a role; 400 when there is none."""
    service = config.service(name) or next((s for s in config.stack_services("live") if s.role == name), None)
    twin = config.twin(service) if service else None
    if service is None or twin is None:
        known = sorted(s.name for s in config.stack_services("live") if config.twin(s))
        raise InvalidRequest(
            f"{name!r} is not a swappable service; known: {known}.", fields={"service": [f"one of {known}"]}
        )
    return (service, twin) if service.stack == "live" else (twin, service)


def _configured(config: Config, name: str) -> Service:
    service = config.service(name)
    if service is None or not service.in_container:
        raise InvalidRequest(
            f"{name!r} is not a configured container service.",
            fields={"service": ["not a container service"]},
        )
    return service


def require_docker() -> None:
    """Before accepting an operation: Docker must answer now (503 otherwise)."""
    try:
        with Engine(timeout=PING_TIMEOUT_SECONDS) as engine:
            engine.ping()
    except DockerUnavailable as exc:
        docker_reachable(reachable=False, error=exc.detail)
        raise
    docker_reachable(reachable=True)


def _request(
    kind: str, plan: list[Service], params: dict[str, Any], *, actor: str, reason: str = ""
) -> Operation:
    require_docker()  # outside the transaction: never wait on Docker while holding locks
    queues.require_broker()  # a queue that is down is a 503 now, before anything is committed
    config = gaiaorch_config.current()
    try:
        with transaction.atomic():
            _refuse_if_busy()
            if params["action"] == "start":
                params = {**params, **_check_memory(config, plan, strict=params["gpu_enabled"])}
            if params["gpu_enabled"]:
                params = {**params, **_take_gpu(config, params["vram_need_mib"], actor)}
            operation = Operation.objects.create(
                kind=kind,
                services=[service.name for service in plan],
                params=params,
                requested_by=actor,
                lease_id=params.pop("lease_id", ""),
                attempts=1,
                deadline_at=timezone.now() + _time_budget(plan),
            )
            record_event(
                events.OPERATION_REQUESTED,
                f"{kind} requested by {actor}",
                reason,
                data={"operation_id": operation.id, "services": operation.services, "params": params},
                actor=actor,
                subject=("container_operation", operation.id),
            )
            transaction.on_commit(lambda: enqueue(operation.id))
    except IntegrityError:
        # Two requests raced past _refuse_if_busy; the partial unique constraint let one through.
        _refuse_if_busy()
        raise Conflict(
            "Another container operation was requested at the same moment.", code="operation_in_progress"
        ) from None
    return operation


def _time_budget(plan: list[Service]) -> timedelta:
    """Long enough for every service to stop gracefully and come back healthy, plus slack."""
    seconds = sum(service.stop_timeout_seconds + service.health_timeout_seconds for service in plan)
    return timedelta(seconds=seconds + DEADLINE_SLACK_SECONDS)


def _refuse_if_busy() -> None:
    running = Operation.objects.filter(status__in=OperationStatus.active()).first()
    if running:
        raise Conflict(
            f"Container operation #{running.id} ({running.kind}) is still {running.status}.",
            code="operation_in_progress",
            operation_id=running.id,
            operation_kind=running.kind,
            status_url=status_url(running),
        )


def status_url(operation: Operation) -> str:
    return f"/containers/operations/{operation.id}"


# --- GPU memory and the lease ---------------------------------------------------------------


def _check_memory(config: Config, plan: list[Service], *, strict: bool) -> dict[str, Any]:
    """Before a start: the GPU services it starts must fit; `strict` when it cannot go unchecked."""
    gpu_index = config.stacks[plan[0].stack].gpu if plan else 0  # type: ignore[index]  # a planned service is in a stack
    sample = telemetry.sample()
    if not sample.available and not strict:
        return {"vram_check": f"skipped: {sample.reason}"}
    return {"vram_need_mib": check_vram(config, plan, gpu_index, sample)}


def _take_gpu(config: Config, need_mib: int, actor: str) -> dict[str, Any]:
    """Take the GPU lease for the candidate stack (409 naming the holder when someone has it)."""
    stack = config.stacks["candidate"]
    holding = holdings.acquire_or_refuse(
        requester=stack.gpu_requester,
        gpu=stack.gpu,
        reason="candidate stack start with GPU",
        memory_mib=need_mib or None,
        actor=actor,
        remedy="release it (stop the live stack) first",
    )
    return {"gpu": stack.gpu, "lease_id": str(holding.lease_id)}


def check_vram(config: Config, plan: list[Service], gpu_index: int, sample: telemetry.Telemetry) -> int:
    """Refuse (409) when the declared VRAM of the GPU services to start exceeds measured free memory.

    Services already running on the GPU are in the measured figures and need nothing more; a
    container running without a GPU request holds no VRAM, so starting it on the GPU needs its
    full declaration. Returns the need in MiB.
    """
    rows = {row.service: row for row in Container.objects.filter(service__in=[s.name for s in plan])}
    starting = [s for s in plan if s.gpu and s.vram_mib and not _runs_on_gpu(rows.get(s.name), gpu_index)]
    need = sum(service.vram_need_mib for service in starting)
    if not need:
        return 0
    measured = sample.gpu(gpu_index) if sample.available else None
    if measured is None:
        raise Unavailable(
            f"GPU {gpu_index} memory cannot be measured ({sample.reason or 'no such GPU'}), "
            "so a GPU start cannot be validated.",
            code="telemetry_unavailable",
        )
    if need > measured.free_mib:
        holder = holdings.current_holder(gpu_index)
        raise Conflict(
            f"The services to start declare {need} MiB of VRAM but GPU {gpu_index} has "
            f"{measured.free_mib} MiB free.",
            code="insufficient_vram",
            need_mib=need,
            free_mib=measured.free_mib,
            total_mib=measured.total_mib,
            starting={service.name: service.vram_need_mib for service in starting},
            holder=holder.requester if holder else None,
            using=_gpu_users(config, gpu_index),
        )
    return need


def _is_running(row: Container | None) -> TypeGuard[Container]:
    return bool(row and row.state == State.RUNNING)


def _runs_on_gpu(row: Container | None, gpu_index: int) -> bool:
    if not _is_running(row):
        return False
    return any(
        request.get("Count") == -1 or str(gpu_index) in (request.get("DeviceIDs") or [])
        for request in row.device_requests
    )


def _gpu_users(config: Config, gpu_index: int) -> list[dict[str, Any]]:
    running = Container.objects.filter(state=State.RUNNING, service__in=list(config.services))
    return [
        {"service": row.service, "vram_mib": config.services[row.service].vram_need_mib}
        for row in running
        if config.services[row.service].gpu
    ]


# --- running operations (called by containers.runner) --------------------------------------


def operation(operation_id: int) -> Operation:
    try:
        return Operation.objects.get(pk=operation_id)
    except Operation.DoesNotExist:
        raise NotFound(f"No container operation #{operation_id}.", operation_id=operation_id) from None


def finish_operation(operation_id: int, *, error: str = "", claim: jobs.Claim | None = None) -> Operation:
    """End an operation; with `claim`, only while that worker still holds it (ClaimLost otherwise)."""
    with transaction.atomic():
        if claim is not None:
            claim.update()
        # Row lock: the runner finishing and the recovery abandoning an operation must not interleave.
        op = Operation.objects.select_for_update().get(pk=operation_id)
        op.status = OperationStatus.FAILED if error else OperationStatus.SUCCEEDED
        op.error = error
        op.finished_at = timezone.now()
        op.claimed_by, op.heartbeat_at = "", None
        op.save()
        OperationStep.objects.filter(operation=op, outcome=jobs.StepOutcome.RUNNING).update(
            outcome=jobs.StepOutcome.FAILED, finished_at=op.finished_at, detail=error or "interrupted"
        )
        record_event(
            events.OPERATION_ENDED[op.status],
            f"{op.kind} #{op.id} {op.status}",
            error,
            severity=Severity.ERROR if error else Severity.INFO,
            data={"operation_id": op.id, "services": op.services},
            actor=op.requested_by,
            subject=("container_operation", op.id),
        )
        if error and op.lease_id:
            # A failed GPU start must not keep the GPU it took.
            holdings.release(op.lease_id, reason=f"container operation #{op.id} failed", actor="gaiaorch")
    return op


def release_stack_gpu(stack_name: str, *, actor: str) -> str:
    """After a stack stop: give up the stack's GPU lease, if it holds one."""
    stack = gaiaorch_config.current().stacks[stack_name]
    with transaction.atomic():
        released = holdings.release_if_held(
            requester=stack.gpu_requester, gpu=stack.gpu, reason=f"{stack_name} stack stopped", actor=actor
        )
    if released is None:
        return f"{stack.gpu_requester} held no lease on GPU {stack.gpu}"
    return f"released lease {released.lease_id} of {released.requester} on GPU {stack.gpu}"


def record_swap(live: str, candidate: str, target: str, *, claim: jobs.Claim, actor: str) -> None:
    """Record where traffic goes, while the swap operation's worker still holds its claim."""
    operation_id = claim.pk
    with transaction.atomic():
        claim.update()
        # Row lock: the row saying where this service's traffic goes is read, changed and written back.
        swap, _ = Swap.objects.select_for_update().get_or_create(
            service=live, defaults={"candidate": candidate, "changed_by": actor}
        )
        swap.candidate, swap.target, swap.changed_by = candidate, target, actor
        swap.changed_at, swap.operation_id = timezone.now(), operation_id
        swap.save()
        record_event(
            events.CONTAINER_SWAPPED,
            f"{live}: traffic now goes to the {target} service",
            data={"service": live, "candidate": candidate, "target": target, "operation_id": operation_id},
            actor=actor,
            subject=("container", live),
        )


def swap_target(live: str) -> str:
    swap = Swap.objects.filter(service=live).first()
    return swap.target if swap else SwapTarget.LIVE


# --- recovery ------------------------------------------------------------------------------


class OperationJobs(jobs.JobKind):
    """Container operations as claimed jobs: resumed once after their worker died, then failed."""

    name = "containers.operation"
    model = Operation
    step_model = OperationStep
    step_job_field = "operation_id"
    active = Q(status__in=OperationStatus.active())
    # Handed to no worker yet (the broker refused its task) and claimed by nobody.
    unqueued = Q(attempts=0, claimed_by="")

    def policy(self) -> jobs.JobPolicy:
        return jobs.JobPolicy(
            beat_every_seconds=HEARTBEAT_SECONDS,
            stale_after_seconds=STALE_AFTER_SECONDS,
            recovery_interval_seconds=RECOVERY_INTERVAL_SECONDS,
            max_attempts=MAX_ATTEMPTS,
        )

    def enqueue(self, pk: int) -> None:
        enqueue(pk)  # looked up at call time: tests run operations inline or in a thread instead

    def claimed(self, claim: jobs.Claim) -> None:
        op = Operation.objects.get(pk=claim.pk)  # the claim's UPDATE holds the row in this transaction
        resumed = op.status == OperationStatus.RUNNING
        claim.update(status=OperationStatus.RUNNING, started_at=op.started_at or timezone.now())
        record_event(
            events.OPERATION_RESUMED if resumed else events.OPERATION_STARTED,
            f"{op.kind} #{op.id} {'resumed' if resumed else 'started'} by {claim.worker}",
            subject=("container_operation", op.id),
        )

    def requeued(self, job: Operation, silence: str) -> None:
        record_event(
            events.OPERATION_REQUEUED,
            f"{job.kind} #{job.id} handed to a worker again",
            silence,
            severity=Severity.WARNING,
            subject=("container_operation", job.id),
        )

    def abandoned(self, job: Operation, silence: str) -> None:
        finish_operation(
            job.id, error=f"Operation abandoned: {silence}; gave up after {job.attempts} attempts."
        )


OPERATIONS = OperationJobs()


def recover_stale_operations() -> list[int]:
    """Operations no worker drives any more are resumed once, then failed — never left stuck."""
    return jobs.recover(OPERATIONS)


def operation_summary(op: Operation) -> dict[str, Any]:
    return {
        "operation_id": op.id,
        "kind": op.kind,
        "status": op.status,
        "status_url": status_url(op),
    }


def operation_detail(op: Operation) -> dict[str, Any]:
    return {
        **operation_summary(op),
        "services": op.services,
        "params": op.params,
        "requested_by": op.requested_by,
        "error": op.error,
        "attempts": op.attempts,
        "created_at": op.created_at,
        "started_at": op.started_at,
        "finished_at": op.finished_at,
        "deadline_at": op.deadline_at,
        "steps": [{"service": step.service, **step.as_dict()} for step in op.steps.all()],
    }
