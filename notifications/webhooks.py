"""One HTTP attempt at a webhook: short timeout, no redirects, never raises."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

from gaiaorch.config import Webhook


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
        "X-Gaiaorch-Event-Type": payload["notification_type"],
    }
    started = time.monotonic()
    try:
        response = httpx.post(webhook.url, json=payload, headers=headers, timeout=webhook.timeout_seconds)
    except httpx.HTTPError as exc:
        return Outcome(None, f"{type(exc).__name__}: {exc}"[:500], _since(started))
    error = "" if response.is_success else response.text[:500]
    return Outcome(response.status_code, error, _since(started))


def _since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
