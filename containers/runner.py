"""Driving one operation through Docker, step by step (called by the django-q2 task).

Every step is a row (OperationStep) written before Docker is touched and finished after, so a
reader always sees where an operation is. Steps are idempotent (stop skips what is stopped,
start skips what is running and healthy, routing only changes what differs), which is what
makes resuming an operation after its worker died safe. Claiming, the heartbeat, step rows and
recovery are the job runner's (gaiaorch.jobs); every write goes through the operation's claim.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

import httpx
from django.utils import timezone

from containers import engine as docker_engine
from containers import services
from containers.engine import DockerRefused, DockerUnavailable, Engine
from containers.models import Operation, OperationKind, SwapTarget
from gaiaorch import config as gaiaorch_config
from gaiaorch import jobs
from gaiaorch.config import Service
from gaiaorch.errors import DomainError

logger = logging.getLogger(__name__)

HEALTH_POLL_SECONDS = 0.25
HEALTH_REQUEST_TIMEOUT = 2.0


class StepFailed(Exception):
    pass


def run(operation_id: int) -> None:
    """Run (or resume) an operation to its end; a no-op when another worker holds it."""
    jobs.drive(services.OPERATIONS, operation_id, operate)


def operate(claim: jobs.Claim) -> None:
    error = ""
    try:
        Run(services.operation(claim.pk), claim).execute()
    except jobs.ClaimLost:
        raise  # another worker took over; it finishes the operation
    except DockerUnavailable as exc:
        services.docker_reachable(reachable=False, error=exc.detail)
        error = f"Docker became unreachable: {exc.detail}"
    except (StepFailed, DockerRefused, DomainError) as exc:
        error = str(exc)
    except Exception as exc:  # a bug must end the operation, not leave it running
        logger.exception("container operation %s crashed", claim.pk)
        error = f"Unexpected error: {exc!r}"
    services.finish_operation(claim.pk, error=error, claim=claim)


class Run:
    def __init__(self, op: Operation, claim: jobs.Claim):
        self.op = op
        self.claim = claim
        self.config = gaiaorch_config.current()
        self.plan = [self.config.services[name] for name in op.services if name in self.config.services]
        self.engine = Engine()

    def execute(self) -> None:
        try:
            kind = OperationKind(self.op.kind)
            if kind == OperationKind.SWAP:
                self.swap()
            elif self.op.params["action"] == "stop":
                self.stop_all(self.plan)
            elif self.op.params["action"] == "start":
                self.start_all(self.plan)
            elif self.op.params["action"] == "kill":
                self.kill_all(self.plan)
            else:
                self.stop_all(self.plan)
                self.start_all(self.config.start_order(self.plan))
            if kind in (OperationKind.LIVE_STOP, OperationKind.CANDIDATE_STOP):
                self.release_stack_gpu(self.op.params["stack"])
        finally:
            self.engine.close()

    @contextlib.contextmanager
    def step(self, name: str, service: str = ""):
        self.claim.check()
        if self.op.deadline_at and timezone.now() > self.op.deadline_at:
            raise StepFailed(
                f"the operation passed its deadline ({self.op.deadline_at:%H:%M:%S} UTC) before {name}"
            )
        record = self.claim.begin_step(name, service=service)
        outcome: dict[str, Any] = {"outcome": jobs.StepOutcome.SUCCEEDED, "detail": ""}
        try:
            yield outcome
        except StepFailed as exc:
            self.claim.finish_step(record, jobs.StepOutcome.FAILED, str(exc))
            raise
        except (DockerUnavailable, DomainError) as exc:
            self.claim.finish_step(record, jobs.StepOutcome.FAILED, exc.detail)
            raise
        except DockerRefused as exc:
            self.claim.finish_step(record, jobs.StepOutcome.FAILED, str(exc))
            raise StepFailed(f"{service or name}: {_hint(str(exc))}") from None
        figures = outcome.pop("figures", {})
        self.claim.finish_step(record, outcome["outcome"], outcome["detail"], **figures)

    def observe(self, service: Service, attrs: dict[str, Any] | None) -> None:
        services.record_observation(service, docker_engine.observe(attrs))

    # --- stop ----------------------------------------------------------------------------

    def stop_all(self, plan: list[Service]) -> None:
        for service in plan:
            with self.step(f"stop {service.name}", service.name) as outcome:
                self.stop_one(service, outcome)

    def stop_one(self, service: Service, outcome: dict[str, Any]) -> None:
        attrs = self.engine.find(self.config, service)
        if attrs is None or attrs["State"]["Status"] != "running":
            outcome["outcome"] = jobs.StepOutcome.SKIPPED
            outcome["detail"] = "no container" if attrs is None else f"already {attrs['State']['Status']}"
            self.observe(service, attrs)
            return
        began = time.monotonic()
        self.engine.stop(self.config, attrs, service.stop_timeout_seconds)
        stopped = self.engine.inspect(attrs["Id"])
        self.observe(service, stopped)
        seconds = round(time.monotonic() - began, 2)
        exit_code = stopped["State"]["ExitCode"] if stopped else None
        killed = exit_code == 137
        outcome["figures"] = {"seconds": seconds, "exit_code": exit_code, "killed": killed}
        outcome["detail"] = (
            f"killed after the {service.stop_timeout_seconds} s graceful timeout"
            if killed
            else f"stopped gracefully in {seconds} s"
        )

    def kill_all(self, plan: list[Service]) -> None:
        for service in plan:
            with self.step(f"kill {service.name}", service.name) as outcome:
                attrs = self.engine.find(self.config, service)
                if attrs is None or attrs["State"]["Status"] != "running":
                    outcome["outcome"] = jobs.StepOutcome.SKIPPED
                    outcome["detail"] = (
                        "no container" if attrs is None else f"already {attrs['State']['Status']}"
                    )
                    self.observe(service, attrs)
                    continue
                self.engine.kill(self.config, attrs)
                self.observe(service, self.engine.inspect(attrs["Id"]))
                outcome["detail"] = "killed (SIGKILL)"

    def release_stack_gpu(self, stack: str) -> None:
        with self.step(f"release {stack} GPU lease") as outcome:
            outcome["detail"] = services.release_stack_gpu(stack, actor=self.op.requested_by)

    # --- start ---------------------------------------------------------------------------

    def start_all(self, plan: list[Service]) -> None:
        for service in plan:
            with self.step(f"start {service.name}", service.name) as outcome:
                attrs = self.start_one(service, outcome)
            with self.step(f"wait healthy {service.name}", service.name) as outcome:
                self.wait_healthy(service, attrs, outcome)
            self.route(service)

    def wanted_devices(self, service: Service) -> list[dict] | None:
        """None: leave the container's device requests alone (live starts)."""
        if self.op.params.get("stack") != "candidate" or self.op.kind == OperationKind.SWAP:
            return None
        if service.gpu and self.op.params.get("gpu_enabled"):
            return docker_engine.gpu_device_requests(self.op.params.get("gpu", 0))
        return []

    def start_one(self, service: Service, outcome: dict[str, Any]) -> dict[str, Any]:
        wanted = self.wanted_devices(service)
        attrs = self.engine.find(self.config, service)
        notes = []
        if attrs is None:
            if service.spec is None:
                raise StepFailed(f"{service.name}: no container found and no container spec configured")
            attrs = self.engine.create(self.config, service, wanted or [])
            notes.append("created from its spec")
        elif wanted is not None and docker_engine.wants_recreate(attrs, wanted):
            if attrs["State"]["Status"] == "running":
                self.engine.stop(self.config, attrs, service.stop_timeout_seconds)
            attrs = self.engine.recreate(self.config, attrs, wanted)
            notes.append("recreated with " + ("the GPU device request" if wanted else "no device request"))
        self.observe(service, attrs)
        if attrs["State"]["Status"] == "running":
            outcome["detail"] = "; ".join([*notes, "already running"])
            return attrs
        self.engine.start(attrs)
        attrs = self.engine.inspect_made(attrs["Id"], service.name)
        self.observe(service, attrs)
        outcome["detail"] = "; ".join([*notes, "started"])
        outcome["figures"] = {"device_requests": docker_engine.device_requests(attrs)}
        return attrs

    def wait_healthy(self, service: Service, attrs: dict[str, Any], outcome: dict[str, Any]) -> None:
        began = time.monotonic()
        deadline = began + service.health_timeout_seconds
        reason = ""
        while time.monotonic() < deadline:
            self.claim.check()
            attrs = self.engine.inspect(attrs["Id"])  # type: ignore[assignment]  # a None ends the loop below
            healthy, reason = health(service, attrs)
            if healthy:
                self.observe(service, attrs)
                outcome["detail"] = f"healthy after {time.monotonic() - began:.2f} s ({reason})"
                outcome["figures"] = {"seconds": round(time.monotonic() - began, 2)}
                return
            if attrs is None or attrs["State"]["Status"] in ("exited", "dead"):
                self.observe(service, attrs)
                raise StepFailed(f"{service.name} stopped while starting: {reason}")
            time.sleep(HEALTH_POLL_SECONDS)
        self.observe(service, attrs)
        raise StepFailed(
            f"{service.name} was not healthy within {service.health_timeout_seconds} s: {reason}"
        )

    # --- swap and routing ------------------------------------------------------------------

    def swap(self) -> None:
        params = self.op.params
        live, candidate = self.config.services[params["live"]], self.config.services[params["candidate"]]
        receiver = candidate if params["target"] == SwapTarget.CANDIDATE else live
        with self.step(f"check {receiver.name} healthy", receiver.name) as outcome:
            attrs = self.engine.find(self.config, receiver)
            healthy, reason = health(receiver, attrs)
            if not healthy:
                raise StepFailed(f"{receiver.name} is not healthy ({reason}); traffic stays where it is")
            outcome["detail"] = reason
        services.record_swap(
            live.name, candidate.name, params["target"], claim=self.claim, actor=self.op.requested_by
        )
        for service in (live, candidate):
            self.route(service)

    def route(self, service: Service) -> None:
        """Give the live network name to whichever container the recorded swap says."""
        live = service if service.stack == "live" else self.config.twin(service)
        if not self.config.docker.network or live is None or self.config.twin(live) is None:
            return  # nothing to swap: no shared network, or no live/candidate pair
        attrs = self.engine.find(self.config, service)
        if attrs is None:
            return
        to_candidate = services.swap_target(live.name) == SwapTarget.CANDIDATE
        holds_name = (service.stack == "candidate") == to_candidate
        network, alias = self.config.docker.network, live.network_alias
        current = docker_engine.own_aliases(attrs, network)
        wanted = sorted({*current, alias}) if holds_name else [a for a in current if a != alias]
        if network in (attrs["NetworkSettings"]["Networks"] or {}) and sorted(current) == wanted:
            return
        with self.step(f"route {service.name}", service.name) as outcome:
            self.engine.set_aliases(attrs, network, wanted)
            outcome["detail"] = (
                f"now {'answers' if holds_name else 'no longer answers'} to {alias} on {network}"
            )


def health(service: Service, attrs: dict[str, Any] | None) -> tuple[bool, str]:
    """Running, and healthy by Docker's healthcheck or the configured health URL (either if both)."""
    if attrs is None:
        return False, "no container"
    state = attrs["State"]
    if state["Status"] != "running":
        return False, f"container is {state['Status']} (exit code {state.get('ExitCode')})"
    docker_health = (state.get("Health") or {}).get("Status")
    if docker_health and docker_health != "healthy":
        return False, f"Docker health is {docker_health}"
    if service.health_url:
        try:
            response = httpx.get(service.health_url, timeout=HEALTH_REQUEST_TIMEOUT)
        except httpx.HTTPError as exc:
            return False, f"{service.health_url} did not answer: {exc}"
        if not response.is_success:
            return False, f"{service.health_url} answered {response.status_code}"
        return True, f"{service.health_url} answered {response.status_code}"
    return (
        True,
        f"Docker health is {docker_health}" if docker_health else "running (no health check configured)",
    )


def _hint(message: str) -> str:
    if "device driver" in message or "nvidia" in message.lower():
        return f"{message} (this host has no NVIDIA container runtime: install the NVIDIA Container Toolkit)"
    return message
