"""Outbound actions of a handoff: the steps of release and reclaim ladders — HTTP calls to GAIA
services, engines' own memory APIs (vLLM, SGLang, Ollama, llama.cpp), container stop, kill, start.

Every call has a timeout; a non-2xx answer, a 2xx that says it failed, a timeout or a refused
connection is a PhaseFailed carrying the callee, the URL, the status and the body, so the
handoff's error says exactly what the other side answered. No answer here is proof that memory
was freed: the handoff measures that (handoffs.measure).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import httpx

from gaiaorch.config import RELEASE, EngineCall, HttpCall, Service, Step
from gaiaorch.errors import DomainError
from handoffs.errors import PhaseFailed

BODY_LIMIT = 2000  # characters of the callee's answer kept in the error's `body`
EXCERPT_LIMIT = 200  # of them, quoted in the error's sentence


_clients: dict[int, httpx.Client] = {}


def _client() -> httpx.Client:
    # One pooled client per process (django-q2 forks workers; a client must not cross a fork).
    # Building a client loads the CA bundle, which costs more than a whole loopback call.
    pid = os.getpid()
    if pid not in _clients:
        _clients[pid] = httpx.Client()
    return _clients[pid]


def http_call(service: str, call: HttpCall, timeout: float, payload: dict[str, Any] | None = None) -> dict:
    """Make one call; the parsed JSON answer (or {}) on 2xx, PhaseFailed otherwise.

    A 2xx whose JSON says it failed — the seed GAIA services' `{success: false, …}`, v0.9's
    `{ok: false, …}` — is a failure too: the callee said it did not do it."""
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
    body = response.text[:BODY_LIMIT]
    try:
        answer = response.json()
    except ValueError:
        answer = {}
    answer = answer if isinstance(answer, dict) else {}
    said_no = response.is_success and (answer.get("success") is False or answer.get("ok") is False)
    if not response.is_success or said_no:
        refused = " but said it failed" if said_no else ""
        raise PhaseFailed(
            f"{service} answered {response.status_code}{refused} to {call.method} {call.url}{_excerpt(body)}",
            service=service,
            url=call.url,
            status=response.status_code,
            body=body,
        )
    return answer


def _excerpt(body: str) -> str:
    """`: <the answer on one line>`, shortened, for the error's sentence ("" for an empty answer)."""
    text = " ".join(body.split())
    if len(text) > EXCERPT_LIMIT:
        text = text[: EXCERPT_LIMIT - 1] + "…"
    return f": {text}" if text else ""


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


ANSWER_LIMIT = 2000  # characters of a step's JSON answer kept in its record
FIRST_BACKOFF_SECONDS = 0.25


def take_step(
    service: Service,
    step: Step,
    direction: str,
    payload: dict[str, Any] | None,
    waiting: Waiting,
    *,
    http_timeout: float,
    retry_if: Callable[[PhaseFailed], bool],
    backoff_max: float,
) -> dict[str, Any]:
    """Run a step, again with backoff while `retry_if` says its failure is passing (a 409 from a
    busy GAIA service), until the waiting's deadline. Its figures carry the attempts it took."""
    backoff, attempts = FIRST_BACKOFF_SECONDS, 0
    while True:
        attempts += 1
        timeout = max(0.1, min(http_timeout, waiting.deadline - time.monotonic()))
        try:
            return {**run_step(service, step, direction, timeout, payload, waiting), "attempts": attempts}
        except PhaseFailed as failure:
            if not retry_if(failure) or time.monotonic() + backoff >= waiting.deadline:
                raise PhaseFailed(failure.detail, **failure.context, attempts=attempts) from None
        waiting.pause(backoff)
        backoff = min(backoff * 2, backoff_max)


def busy(failure: PhaseFailed) -> bool:
    """409 is how a GAIA service says "busy, ask again" (gaia-core mid-generation, v0.9)."""
    return failure.context.get("status") == HTTPStatus.CONFLICT


def run_step(
    service: Service,
    step: Step,
    direction: str,
    timeout: float,
    payload: dict[str, Any] | None,
    waiting: Waiting,
) -> dict[str, Any]:
    """Run one ladder step: its call (a plain call gets `payload`; an engine its own API's body),
    then its container action. Returns the step's figures; PhaseFailed when a part failed."""
    figures: dict[str, Any] = {"action": step.action}
    if step.http or step.engine:
        started = time.monotonic()
        if step.http:
            answer = http_call(service.name, step.http, timeout, payload)
        else:
            answer = engine_call(service.name, step.engine, direction, timeout)  # type: ignore[arg-type]  # http or engine
        figures["answer"] = _bounded(answer)
        figures["call_seconds"] = round(time.monotonic() - started, 3)
    if step.container:
        figures["container"] = container_action(step.container, [service.name], waiting)
    return figures


def engine_call(service: str, engine: EngineCall, direction: str, timeout: float) -> dict[str, Any]:
    """An engine's own release or reclaim (docs/engines.md). Its answer says what it was told,
    never that the memory is free: the caller measures that."""
    base = engine.url
    if engine.engine == "vllm":
        if direction == RELEASE:
            http_call(service, HttpCall("POST", f"{base}/sleep?level={engine.level}"), timeout)
            return http_call(service, HttpCall("GET", f"{base}/is_sleeping"), timeout)
        http_call(service, HttpCall("POST", f"{base}/wake_up"), timeout)
        state = http_call(service, HttpCall("GET", f"{base}/is_sleeping"), timeout)
        if state.get("is_sleeping") is not False:
            raise PhaseFailed(
                f"{service} still says it is sleeping after POST {base}/wake_up: {state}",
                service=service,
                url=f"{base}/is_sleeping",
                status=200,
                body=str(state)[:BODY_LIMIT],
            )
        return state
    if engine.engine == "sglang":
        path = "release_memory_occupation" if direction == RELEASE else "resume_memory_occupation"
        return http_call(service, HttpCall("POST", f"{base}/{path}"), timeout, {})
    if engine.engine == "ollama":
        keep_alive = 0 if direction == RELEASE else engine.keep_alive
        body = {"model": engine.model, "keep_alive": keep_alive}
        return http_call(service, HttpCall("POST", f"{base}/api/generate"), timeout, body)
    path = "models/unload" if direction == RELEASE else "models/load"  # llama.cpp's router
    return http_call(service, HttpCall("POST", f"{base}/{path}"), timeout, {"model": engine.model})


def _bounded(answer: dict[str, Any]) -> dict[str, Any]:
    text = json.dumps(answer, default=str)
    return answer if len(text) <= ANSWER_LIMIT else {"excerpt": text[:ANSWER_LIMIT]}


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
