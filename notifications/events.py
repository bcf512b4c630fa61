"""The event types of the notifications app (gaiaorch.event_types)."""

from __future__ import annotations

from gaiaorch.event_types import declare

ORACLE_FALLBACK = declare(
    "notification.oracle_fallback",
    "warning",
    "A cloud model answered for a GAIA role (Prime was unavailable); summary: repeats folded in one.",
    payload=("fallback_model", "original_role", "reason", "timestamp", "count", "summary"),
    optional=("reported_at", "first_event_id", "window_seconds"),
)
WEBHOOK_GAVE_UP = declare(
    "webhook.gave_up",
    "warning",
    "A webhook delivery failed its last attempt; it stays failed until retried.",
    payload=("delivery_id", "event_id", "attempts"),
)
WEBHOOK_RETRIED = declare(
    "webhook.retried",
    "info",
    "An operator gave failed webhook deliveries one more attempt.",
    payload=("delivery_ids", "retried"),
)
MANUAL = declare(
    "manual.event",
    "info",
    "An event made by hand with `manage.py notify event` (tests and demos).",
)
