"""Outbound actions of a handoff: HTTP calls to GAIA services and container stop/start.

Every call has a timeout; a non-2xx answer, a timeout or a refused connection is a PhaseFailed
carrying the callee, the URL, the status and the body, so the handoff's error says exactly what
the other side answered.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import httpx

from handoffs.config import HttpCall, Service, Strategy
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


def run_strategy(
    service: Service, strategy: Strategy, timeout: float, payload: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Run one service's strategy: its HTTP call, then its container action. Returns figures."""
    figures: dict[str, Any] = {}
    if strategy.http:
        started = time.monotonic()
        figures["answer"] = http_call(service.name, strategy.http, timeout, payload)
        figures["call_seconds"] = round(time.monotonic() - started, 3)
    if strategy.container:
        container_action(strategy.container, [service.name])
        figures["container"] = strategy.container
    return figures


def container_action(action: str, services: list[str]) -> None:
    """Stop or start containers of named services through the containers app."""
    try:
        from containers import services as containers
    except ImportError:
        containers = None
    operation = getattr(containers, f"{action}_services", None)
    if operation is None:
        raise PhaseFailed(
            f"container {action} is not available: the containers service offers no {action}_services()",
            services=services,
        )
    operation(services, actor="handoffs")
