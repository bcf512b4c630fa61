"""Outbound actions of a handoff: HTTP calls to GAIA services and container stop/start.

Every call has a timeout; a non-2xx answer, a timeout or a refused connection is a PhaseFailed
carrying the callee, the URL, the status and the body, so the handoff's error says exactly what
the other side answered.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from gaiaorch.config import HttpCall, Service, Strategy
from gaiaorch.errors import DomainError
from handoffs.errors import PhaseFailed

BODY_LIMIT = 2000


_clients: dict[int, httpx.Client] = {}


def _client() -> httpx.Client:
    # One pooled client per process (django-q2 forks workers; a client must not cross a fork).
    # Building a client loads the CA bundle, which costs more than a whole loopback call.
    pid = os.getpid()
    if pid not in _clients:
        _clients[pid] = httpx.Client()
    return _clients[pid]


def http_call(service: str, call: HttpCall, timeout: float, payload: dict[str, Any] | None = None) -> dict:
    """Make one call; the parsed JSON answer (or {}) on 2xx, PhaseFailed otherwise."""
    try:
        response = _client().request(call.method, call.url, json=payload, timeout=timeout)
    except httpx.TimeoutException:
        raise PhaseFailed(
            f"{service} did not answer {call.method} {call.url} within {timeout:g} s",
            service=service,
            url=call.url,
            status=None,
            body="",
            timeout_seconds=timeout,
        ) from None
    except httpx.HTTPError as exc:
        raise PhaseFailed(
            f"{service} is unreachable at {call.url}: {exc}",
            service=service,
            url=call.url,
            status=None,
            body="",
        ) from None
    if not response.is_success:
        raise PhaseFailed(
            f"{service} answered {response.status_code} to {call.method} {call.url}",
            service=service,
            url=call.url,
            status=response.status_code,
            body=response.text[:BODY_LIMIT],
        )
    try:
        answer = response.json()
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def check_health(service: Service, timeout: float) -> None:
    if service.health_url:
        http_call(service.name, HttpCall("GET", service.health_url), timeout)


def wait_healthy(service: Service, timeout: float, deadline: float, pause: Callable[[float], None]) -> None:
    """Poll the health URL until it answers 2xx; PhaseFailed with the last answer at the deadline."""
    while True:
        try:
            check_health(service, min(timeout, max(0.1, deadline - time.monotonic())))
            return
        except PhaseFailed as failure:
            if time.monotonic() >= deadline:
                raise PhaseFailed(
                    f"{service.name} is not healthy: {failure.detail}", **failure.context
                ) from None
        pause(0.5)


@dataclass(frozen=True)
class Waiting:
    """How the caller waits: its pause (heartbeat, cancel check) and its phase deadline."""

    pause: Callable[[float], None]
    deadline: float


def run_strategy(
    service: Service, strategy: Strategy, timeout: float, payload: dict[str, Any] | None, waiting: Waiting
) -> dict[str, Any]:
    """Run one service's strategy: its HTTP call, then its container action. Returns figures."""
    figures: dict[str, Any] = {}
    if strategy.http:
        started = time.monotonic()
        figures["answer"] = http_call(service.name, strategy.http, timeout, payload)
        figures["call_seconds"] = round(time.monotonic() - started, 3)
    if strategy.container:
        figures["container"] = container_action(strategy.container, [service.name], waiting)
    return figures


# --- containers -------------------------------------------------------------------------------
# Container stop/start go through the containers app as operations (one at a time, run by a
# worker); a handoff requests one and follows it, beating its own heartbeat while it waits.
# A *service* stop is used, never a stack stop: a stack stop gives the stack's lease back, and the
# lease must stay with the source until the handoff moves it.

ACTOR = "handoffs"
OPERATION_POLL_SECONDS = 0.25


def _containers():
    try:
        from containers import services
    except ImportError:
        return None
    return services


def _request(what: str, make: Callable[[Any], Any]) -> Any:
    containers = _containers()
    if containers is None or not hasattr(containers, "request_service_operation"):
        raise PhaseFailed(
            f"cannot {what}: the containers app offers no operations here", code="containers_missing"
        )
    try:
        return make(containers)
    except DomainError as refusal:
        raise PhaseFailed(
            f"containers refused to {what}: {refusal.detail}", code=refusal.code, **refusal.context
        ) from None


def container_action(action: str, services: list[str], waiting: Waiting) -> dict[str, Any]:
    """Stop or start services (with what depends on them / what they need) and wait for the end."""
    what = f"{action} {', '.join(services)}"
    operation = _request(
        what,
        lambda containers: containers.request_service_operation(f"service_{action}", services, actor=ACTOR),
    )
    return follow_operation(operation.id, waiting)


def start_stack(stack: str, waiting: Waiting) -> dict[str, Any]:
    """Start a whole stack. Only the candidate start takes `gpu_enabled` (the wire contract's
    POST /containers/candidate/start); it re-acquires the lease the handoff just moved to it."""
    gpu_enabled = stack == "candidate"
    operation = _request(
        f"start the {stack} stack",
        lambda containers: containers.request_stack_operation(
            f"{stack}_start", actor=ACTOR, gpu_enabled=gpu_enabled
        ),
    )
    return follow_operation(operation.id, waiting)


def follow_operation(operation_id: int, waiting: Waiting) -> dict[str, Any]:
    started = time.monotonic()
    while True:
        operation = _containers().operation(operation_id)
        figures = {"operation_id": operation.id, "kind": operation.kind, "services": operation.services}
        if operation.status == "succeeded":
            return {**figures, "seconds": round(time.monotonic() - started, 3)}
        if operation.status == "failed":
            raise PhaseFailed(
                f"container operation #{operation.id} ({operation.kind}) failed: {operation.error}",
                error=operation.error,
                **figures,
            )
        if time.monotonic() >= waiting.deadline:
            raise PhaseFailed(
                f"container operation #{operation.id} ({operation.kind}) is still {operation.status} "
                "at the phase deadline",
                status=operation.status,
                **figures,
            )
        waiting.pause(OPERATION_POLL_SECONDS)
