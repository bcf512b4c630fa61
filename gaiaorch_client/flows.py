"""What the client does, written once for both the sync and the async client.

Each operation is a generator that yields a `Call` (an HTTP request) or a `Pause` and is sent
back the `httpx.Response`; the clients in sync.py and aio.py only perform the I/O.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

T = TypeVar("T")

TOKEN_VARIABLE = "GAIAORCH_TOKEN"  # a service's token, when the code that makes the client passes none
HANDOFF_TERMINAL_PHASES = frozenset({"completed", "failed", "cancelled"})
WAIT_CHUNK_SECONDS = 60.0  # one /gpu/wait call blocks at most this long


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    json: dict[str, Any] | None = None
    timeout: float | None = None


@dataclass(frozen=True)
class Pause:
    seconds: float


Flow = Generator["Call | Pause", Any, T]


class GaiaorchError(Exception):
    """The orchestrator refused: `status_code`, `error` code and `detail` sentence, `body` in full."""

    def __init__(self, status_code: int, body: dict[str, Any]):
        self.status_code = status_code
        self.body = body
        self.error = body.get("error", "error")
        self.detail = body.get("detail", "")
        super().__init__(f"{status_code} {self.error}: {self.detail}")


class LeaseTimeout(Exception):
    """The GPU was not granted within the wait; the queue entry has been withdrawn."""


class HandoffFailed(Exception):
    def __init__(self, status: dict[str, Any]):
        self.status = status
        super().__init__(
            f"handoff {status.get('handoff_id')} ended {status.get('phase')}: {status.get('error')}"
        )


class HandoffTimeout(Exception):
    def __init__(self, status: dict[str, Any]):
        self.status = status
        super().__init__(f"handoff {status.get('handoff_id')} still {status.get('phase')} after the wait")


@dataclass
class Lease:
    """A GPU lease: granted (with a fencing token) or waiting in the queue."""

    lease_id: str
    granted: bool
    fencing_token: int | None = None
    gpu: int | None = None
    expires_at: str | None = None
    queue_position: int | None = None
    body: dict[str, Any] = field(default_factory=dict)
    heartbeat_error: Exception | None = None  # set when a heartbeat failed while the lease was held


def auth_headers(token: str | None) -> dict[str, str]:
    """`Authorization: Token <token>`, with $GAIAORCH_TOKEN when `token` is None; no header when
    neither is set (or `token` is ""), for a caller on a trusted network."""
    key = os.environ.get(TOKEN_VARIABLE, "") if token is None else token
    return {"Authorization": f"Token {key}"} if key else {}


def body_of(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = {"error": "not_json", "detail": response.text[:200]}
    if response.status_code >= 400:
        raise GaiaorchError(response.status_code, body if isinstance(body, dict) else {"detail": str(body)})
    return body


def lease_of(response: httpx.Response) -> Lease:
    body = body_of(response)
    return Lease(
        lease_id=str(body["lease_id"]),
        granted=response.status_code == 200,
        fencing_token=body.get("fencing_token"),
        gpu=body.get("gpu"),
        expires_at=body.get("expires_at"),
        queue_position=body.get("queue_position"),
        body=body,
    )


def acquire(request: dict[str, Any]) -> Flow[Lease]:
    return lease_of((yield Call("POST", "/gpu/acquire", request)))


def wait(lease_id: str, timeout_seconds: float) -> Flow[Lease]:
    body = {"lease_id": lease_id, "timeout_seconds": timeout_seconds}
    return lease_of((yield Call("POST", "/gpu/wait", body, timeout=timeout_seconds + 15)))


def release(lease_id: str) -> Flow[dict[str, Any]]:
    return body_of((yield Call("POST", "/gpu/release", {"lease_id": lease_id})))


def heartbeat(lease_id: str) -> Flow[dict[str, Any]]:
    return body_of((yield Call("POST", "/gpu/heartbeat", {"lease_id": lease_id})))


def acquire_granted(request: dict[str, Any], wait_seconds: float) -> Flow[Lease]:
    """Acquire, then wait in the queue until granted; on timeout withdraw the entry and raise."""
    deadline = time.monotonic() + wait_seconds
    lease = yield from acquire(request)
    try:
        while not lease.granted:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LeaseTimeout(f"GPU not granted within {wait_seconds} s (lease {lease.lease_id})")
            lease = yield from wait(lease.lease_id, min(remaining, WAIT_CHUNK_SECONDS))
    except GeneratorExit:
        raise  # the flow was abandoned; nothing may be sent any more
    except BaseException:
        if not lease.granted:
            yield from release_quietly(lease.lease_id)
        raise
    return lease


def release_quietly(lease_id: str) -> Flow[None]:
    with contextlib.suppress(GaiaorchError, httpx.HTTPError):
        yield from release(lease_id)


def start_handoff(kind: str, reason: str | None, timeout_seconds: float | None) -> Flow[dict[str, Any]]:
    body = {key: value for key, value in (("reason", reason), ("timeout_seconds", timeout_seconds)) if value}
    return body_of((yield Call("POST", f"/handoff/{kind}", body)))


def handoff_status(handoff_id: str) -> Flow[dict[str, Any]]:
    return body_of((yield Call("GET", f"/handoff/{handoff_id}/status")))


def wait_handoff(handoff_id: str, timeout_seconds: float, poll_seconds: float) -> Flow[dict[str, Any]]:
    """Poll until the handoff ends; return its status if completed, raise if it failed or took too long."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        status = yield from handoff_status(handoff_id)
        if status.get("phase") in HANDOFF_TERMINAL_PHASES:
            if status["phase"] != "completed":
                raise HandoffFailed(status)
            return status
        if time.monotonic() >= deadline:
            raise HandoffTimeout(status)
        yield Pause(poll_seconds)


def run_handoff(kind: str, reason: str | None, timeout_seconds: float, poll_seconds: float) -> Flow[dict]:
    started = yield from start_handoff(kind, reason, None)
    return (yield from wait_handoff(str(started["handoff_id"]), timeout_seconds, poll_seconds))


def oracle_fallback(
    fallback_model: str, original_role: str, reason: str | None, timeout: float
) -> Flow[dict]:
    body = {"fallback_model": fallback_model, "original_role": original_role}
    if reason:
        body["reason"] = reason
    return body_of((yield Call("POST", "/notify/oracle-fallback", body, timeout=timeout)))
