"""The `notifications:` section of config/orchestrator.yaml, parsed strictly.

Read on every use (it is a few dictionaries), so tests may swap settings.GAIAORCH; validated once
at start-up by NotificationsConfig.ready() so a typo stops the process instead of a delivery.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from gaiaorch.config import MISSING, int_parser, lookup, parse_list, parse_str
from gaiaorch.redaction import public_webhook_name
from notifications.feed import type_filter

SECTION = "notifications"


def float_parser(minimum: float, maximum: float):
    def parse_float(name: str, raw: Any) -> float:
        try:
            value = float(str(raw).strip())
        except ValueError:
            raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}") from None
        if not minimum <= value <= maximum:
            raise ImproperlyConfigured(f"{name} must be between {minimum} and {maximum}, got {value}")
        return value

    return parse_float


@dataclass(frozen=True)
class Webhook:
    name: str
    url: str
    types: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    timeout_seconds: float = 5.0
    max_attempts: int = 8

    def wants(self, event_type: str) -> bool:
        return type_filter(self.types)(event_type)


@dataclass(frozen=True)
class NotificationSettings:
    oracle_dedup_window_seconds: int = 60
    relay_poll_ms: int = 50
    replay_limit: int = 10_000
    client_queue_size: int = 1000
    slow_client_timeout_seconds: float = 5.0
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 300.0
    webhooks: tuple[Webhook, ...] = field(default=())

    def webhook_named(self, name: str) -> Webhook | None:
        return next((hook for hook in self.webhooks if hook.name == name), None)


SCALARS = {
    "oracle_dedup_window_seconds": int_parser(0, 86_400),
    "relay_poll_ms": int_parser(10, 10_000),
    "replay_limit": int_parser(0, 1_000_000),
    "client_queue_size": int_parser(1, 100_000),
    "slow_client_timeout_seconds": float_parser(0.05, 600),
    "retry_base_seconds": float_parser(0.01, 3600),
    "retry_max_seconds": float_parser(0.01, 86_400),
}


def notification_settings() -> NotificationSettings:
    section = lookup(settings.GAIAORCH, SECTION)
    section = {} if section is MISSING or section is None else section
    if not isinstance(section, Mapping):
        raise ImproperlyConfigured(f"{SECTION} must be a mapping")
    values = {
        key: parse(f"{SECTION}.{key}", section[key])
        for key, parse in SCALARS.items()
        if section.get(key) is not None
    }
    webhooks = tuple(parse_webhook(i, raw) for i, raw in enumerate(section.get("webhooks") or []))
    names = [hook.name for hook in webhooks]
    if len(set(names)) != len(names):
        raise ImproperlyConfigured(f"{SECTION}.webhooks names must be unique, got {names}")
    return NotificationSettings(**values, webhooks=webhooks)


def parse_webhook(index: int, raw: Any) -> Webhook:
    where = f"{SECTION}.webhooks[{index}]"
    if not isinstance(raw, Mapping):
        raise ImproperlyConfigured(f"{where} must be a mapping with at least a url")
    url = parse_str(f"{where}.url", raw.get("url", ""))
    if urlparse(url).scheme not in {"http", "https"}:
        raise ImproperlyConfigured(f"{where}.url must be an http(s) URL, got {url!r}")
    headers = raw.get("headers") or {}
    if not isinstance(headers, Mapping):
        raise ImproperlyConfigured(f"{where}.headers must be a mapping of header name to value")
    return Webhook(
        name=parse_str(f"{where}.name", raw.get("name") or public_webhook_name(url))[:200],
        url=url,
        types=tuple(parse_list(f"{where}.types", raw.get("types") or [])),
        headers=tuple((str(k), parse_str(f"{where}.headers.{k}", v)) for k, v in headers.items()),
        timeout_seconds=float_parser(0.1, 120)(f"{where}.timeout_seconds", raw.get("timeout_seconds", 5)),
        max_attempts=int_parser(1, 100)(f"{where}.max_attempts", raw.get("max_attempts", 8)),
    )
