"""One HTTP attempt at a webhook: short timeout, no redirects, never raises, never repeats the URL."""

from __future__ import annotations

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
    try:
        response = httpx.post(webhook.url, json=payload, headers=headers, timeout=webhook.timeout_seconds)
    except httpx.HTTPError as exc:
        return Outcome(None, _error(webhook, f"{type(exc).__name__}: {exc}"), _since(started))
    error = "" if response.is_success else _error(webhook, response.text)
    return Outcome(response.status_code, error, _since(started))


def _error(webhook: Webhook, text: str) -> str:
    """What is stored and shown of a failed attempt: bounded, and the URL (a secret) reduced to its origin."""
    return without_url(text, webhook.url)[:500]


def _since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
