"""The blocking client (threads, plain scripts, WSGI services)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from gaiaorch_client import contract, flows
from gaiaorch_client.flows import Call, Flow, Lease, Pause, T

logger = logging.getLogger("gaiaorch_client")


class Client:
    """Talks to gaiaorch on behalf of one GAIA service (its `requester` name and API token; the
    token defaults to the environment variable GAIAORCH_TOKEN)."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:6410",
        token: str | None = None,
        requester: str | None = None,
        timeout: float = 10.0,
        **httpx_options: Any,
    ):
        headers = flows.auth_headers(token)
        self.requester = requester
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout, **httpx_options)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def run(self, flow: Flow[T]) -> T:
        """Drive one flow: perform each HTTP call it yields and send it the response."""
        send, value = flow.send, None
        while True:
            try:
                step = send(value)
            except StopIteration as done:
                return done.value
            try:
                value, send = self._perform(step), flow.send
            except BaseException as exc:  # incl. cancellation: the flow withdraws a queue entry, re-raises
                value, send = exc, flow.throw  # type: ignore[assignment]  # throw takes the exception

    def _perform(self, step: Call | Pause) -> httpx.Response | None:
        if isinstance(step, Pause):
            return time.sleep(step.seconds)  # type: ignore[func-returns-value]  # None
        return self.http.request(step.method, step.path, json=step.json, timeout=timeout_of(step))

    # GPU leases
    def acquire(self, reason: str, **options: Any) -> Lease:
        return self.run(flows.acquire(self._acquire_request(reason, options)))

    def wait(self, lease_id: str, timeout_seconds: float) -> Lease:
        return self.run(flows.wait(lease_id, timeout_seconds))

    def release(self, lease_id: str) -> dict[str, Any]:
        return self.run(flows.release(lease_id))

    def heartbeat(self, lease_id: str) -> dict[str, Any]:
        return self.run(flows.heartbeat(lease_id))

    @contextmanager
    def gpu(
        self, reason: str, *, wait_seconds: float = 600.0, heartbeat_seconds: float = 30.0, **options: Any
    ) -> Iterator[Lease]:
        """Hold a GPU for the block: wait for the grant, heartbeat while held, release on exit."""
        lease = self.run(flows.acquire_granted(self._acquire_request(reason, options), wait_seconds))
        stop = threading.Event()
        beating = threading.Thread(
            target=self._heartbeat_until, args=(lease, heartbeat_seconds, stop), daemon=True
        )
        beating.start()
        try:
            yield lease
        finally:
            stop.set()
            beating.join()
            self.run(flows.release_quietly(lease.lease_id))

    def _heartbeat_until(self, lease: Lease, every: float, stop: threading.Event) -> None:
        while not stop.wait(every):
            try:
                self.heartbeat(lease.lease_id)
            except Exception as exc:  # keep trying: the server may be restarting
                lease.heartbeat_error = exc
                logger.warning("heartbeat for lease %s failed: %s", lease.lease_id, exc)

    def _acquire_request(self, reason: str, options: dict[str, Any]) -> dict[str, Any]:
        return contract.acquire_request(options.pop("requester", self.requester), reason, options)

    # Handoffs
    def start_handoff(self, kind: str = "prime-to-study", reason: str | None = None) -> dict[str, Any]:
        return self.run(flows.start_handoff(kind, reason, None))

    def handoff_status(self, handoff_id: str) -> dict[str, Any]:
        return self.run(flows.handoff_status(handoff_id))

    def wait_handoff(
        self, handoff_id: str, timeout: float = 900.0, poll_seconds: float = 1.0
    ) -> dict[str, Any]:
        return self.run(flows.wait_handoff(handoff_id, timeout, poll_seconds))

    def handoff(
        self,
        kind: str = "prime-to-study",
        reason: str | None = None,
        timeout: float = 900.0,
        poll_seconds=1.0,
    ) -> dict[str, Any]:
        """Start a handoff and wait for it to complete (raises HandoffFailed / HandoffTimeout)."""
        return self.run(flows.run_handoff(kind, reason, timeout, poll_seconds))

    # Notices
    def notify_oracle_fallback(
        self, fallback_model: str, original_role: str, reason: str | None = None, timeout: float = 2.0
    ) -> bool:
        """Tell users a cloud model answered. Never raises; False when the notice did not get through."""
        try:
            self.run(flows.oracle_fallback(fallback_model, original_role, reason, timeout))
            return True
        except Exception as exc:
            logger.warning("Oracle-fallback notice not delivered: %s", exc)
            return False


def timeout_of(call: Call):
    return call.timeout if call.timeout is not None else httpx.USE_CLIENT_DEFAULT
