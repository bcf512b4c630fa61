"""One HTTP attempt at a webhook: bounded as a whole by its timeout, no redirects, never raises,
never repeats the URL.

httpx's timeouts apply to each connect, read and write, so a receiver that trickles its answer a
byte at a time could hold an attempt for ever. The attempt runs in an event loop of its own under
one deadline instead: connecting, sending and reading the whole answer share the timeout.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import httpx

from gaiaorch.config import Webhook
from gaiaorch.redaction import without_url


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def post(webhook: Webhook, payload: dict[str, Any], delivery_id: int) -> Outcome:
    headers = {
        **dict(webhook.headers),
        "X-Gaiaorch-Delivery": str(delivery_id),
        "X-Gaiaorch-Event-Type": payload["type"],
    }
    started = time.monotonic()
    loop = asyncio.new_event_loop()
    try:
        response = loop.run_until_complete(
            asyncio.wait_for(_post(webhook, payload, headers), webhook.timeout_seconds)
        )
    except TimeoutError:
        error = f"TimeoutError: no complete answer within {webhook.timeout_seconds} s"
        return Outcome(None, error, _since(started))
    except httpx.HTTPError as exc:
        return Outcome(None, _error(webhook, f"{type(exc).__name__}: {exc}"), _since(started))
    finally:
        # close() does not wait for a name lookup still running in the loop's executor thread.
        loop.close()
    error = "" if response.is_success else _error(webhook, response.text)
    return Outcome(response.status_code, error, _since(started))


def _error(webhook: Webhook, text: str) -> str:
    """What is stored and shown of a failed attempt: bounded, and the URL (a secret) reduced to its origin."""
    return without_url(text, webhook.url)[:500]


async def _post(webhook: Webhook, payload: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=webhook.timeout_seconds) as client:
        return await client.post(webhook.url, json=payload, headers=headers)


def _since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
