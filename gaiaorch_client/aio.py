"""The asyncio client (FastAPI and other async GAIA services)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import httpx

from gaiaorch_client import contract, flows
from gaiaorch_client.flows import Call, Flow, Lease, Pause, T
from gaiaorch_client.sync import timeout_of

logger = logging.getLogger("gaiaorch_client")


class AsyncClient:
    """The same operations as gaiaorch_client.Client, awaited."""

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
        self.http = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout, **httpx_options)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def run(self, flow: Flow[T]) -> T:
        send, value = flow.send, None
        while True:
            try:
                step = send(value)
            except StopIteration as done:
                return done.value
            try:
                value, send = await self._perform(step), flow.send
            except BaseException as exc:  # incl. cancellation: the flow withdraws a queue entry, re-raises
                value, send = exc, flow.throw  # type: ignore[assignment]  # throw takes the exception

    async def _perform(self, step: Call | Pause) -> httpx.Response | None:
        if isinstance(step, Pause):
            return await asyncio.sleep(step.seconds)  # type: ignore[func-returns-value]  # None
        return await self.http.request(step.method, step.path, json=step.json, timeout=timeout_of(step))

    # GPU leases
    async def acquire(self, reason: str, **options: Any) -> Lease:
        return await self.run(flows.acquire(self._acquire_request(reason, options)))

    async def wait(self, lease_id: str, timeout_seconds: float) -> Lease:
        return await self.run(flows.wait(lease_id, timeout_seconds))

    async def release(self, lease_id: str) -> dict[str, Any]:
        return await self.run(flows.release(lease_id))

    async def heartbeat(self, lease_id: str) -> dict[str, Any]:
        return await self.run(flows.heartbeat(lease_id))

    @asynccontextmanager
    async def gpu(
        self, reason: str, *, wait_seconds: float = 600.0, heartbeat_seconds: float = 30.0, **options: Any
    ) -> AsyncIterator[Lease]:
        """Hold a GPU for the block: wait for the grant, heartbeat while held, release on exit."""
        lease = await self.run(flows.acquire_granted(self._acquire_request(reason, options), wait_seconds))
        beating = asyncio.create_task(self._heartbeat_forever(lease, heartbeat_seconds))
        try:
            yield lease
        finally:
            beating.cancel()
            with suppress(asyncio.CancelledError):
                await beating
            await self.run(flows.release_quietly(lease.lease_id))

    async def _heartbeat_forever(self, lease: Lease, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await self.heartbeat(lease.lease_id)
            except Exception as exc:  # keep trying: the server may be restarting
                lease.heartbeat_error = exc
                logger.warning("heartbeat for lease %s failed: %s", lease.lease_id, exc)

    def _acquire_request(self, reason: str, options: dict[str, Any]) -> dict[str, Any]:
        return contract.acquire_request(options.pop("requester", self.requester), reason, options)

    # Handoffs
    async def start_handoff(self, kind: str = "prime-to-study", reason: str | None = None) -> dict[str, Any]:
        return await self.run(flows.start_handoff(kind, reason, None))

    async def handoff_status(self, handoff_id: str) -> dict[str, Any]:
        return await self.run(flows.handoff_status(handoff_id))

    async def wait_handoff(
        self, handoff_id: str, timeout: float = 900.0, poll_seconds: float = 1.0
    ) -> dict[str, Any]:
        return await self.run(flows.wait_handoff(handoff_id, timeout, poll_seconds))

    async def handoff(
        self,
        kind: str = "prime-to-study",
        reason: str | None = None,
        timeout: float = 900.0,
        poll_seconds=1.0,
    ) -> dict[str, Any]:
        """Start a handoff and wait for it to complete (raises HandoffFailed / HandoffTimeout)."""
        return await self.run(flows.run_handoff(kind, reason, timeout, poll_seconds))

    # Notices
    async def notify_oracle_fallback(
        self, fallback_model: str, original_role: str, reason: str | None = None, timeout: float = 2.0
    ) -> bool:
        """Tell users a cloud model answered. Never raises; False when the notice did not get through."""
        try:
            await asyncio.wait_for(
                self.run(flows.oracle_fallback(fallback_model, original_role, reason, timeout)), timeout
            )
            return True
        except Exception as exc:
            logger.warning("Oracle-fallback notice not delivered: %s", exc)
            return False
