"""The event-type registry: every type of event the system writes, declared once.

Each app declares its types in its own `events.py` with `declare()`: the dotted name, its
severity (and any other severity it may be written with), a one-line description for users, and
the keys of its payload (the event's `data`): those always there and those sometimes there. The
event log's writer (`notifications.services.record_events`) refuses a type nobody declared, a
severity the type does not allow, and a payload with a missing or an undeclared key: each is a
programming error (`EventContractError`), never an event written with a shape nobody documented.
docs/events.md is generated from this registry (`manage.py events_doc`); the base layer declares
its own types in gaiaorch/events.py.

This module imports nothing of the project, so every layer may declare and read types. The base
layer writes its own events (accounts, tokens) through `record()`, which calls the writer the
notifications app installs at start-up (`install_writer`): the base layer never imports it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import import_module
from typing import Any

SEVERITIES = ("debug", "info", "warning", "error", "critical")
# Keys the writer itself adds to the data of an event written for a tokenless caller
# (gaiaorch.auth.audit_marks): never part of a declared payload.
AUDIT_KEYS = frozenset({"authenticated", "client"})
# The apps whose `events` module declares types, in layer order (docs/DEVELOPING.md).
DECLARING_APPS = ("gaiaorch", "notifications", "leases", "containers", "handoffs")


class EventContractError(RuntimeError):
    """An event the registry does not allow: a programming error, not a refusal of a request."""


@dataclass(frozen=True)
class EventType:
    name: str
    module: str  # the module that declares it: <app>.events (a test may declare its own)
    severity: str
    description: str
    payload: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    also: tuple[str, ...] = ()  # other severities the type may be written with

    @property
    def app(self) -> str:
        return self.module.split(".")[0]

    @property
    def severities(self) -> tuple[str, ...]:
        return (self.severity, *self.also)

    def problems(self, severity: str, data: Mapping[str, Any]) -> list[str]:
        keys = set(data) - AUDIT_KEYS
        missing = sorted(set(self.payload) - keys)
        unknown = sorted(keys - set(self.payload) - set(self.optional))
        allowed = severity in self.severities
        return [
            *([] if allowed else [f"severity {severity!r} is not one of {list(self.severities)}"]),
            *([f"payload lacks {missing}"] if missing else []),
            *([f"payload has undeclared keys {unknown}"] if unknown else []),
        ]


REGISTRY: dict[str, EventType] = {}


def declare(
    name: str,
    severity: str,
    description: str,
    *,
    payload: Iterable[str] = (),
    optional: Iterable[str] = (),
    also: Iterable[str] = (),
) -> str:
    """Declare one event type; returns its name, the constant call sites pass to the writer.
    The type belongs to the app whose module declares it."""
    declared = EventType(
        name=name,
        module=sys._getframe(1).f_globals["__name__"],
        severity=severity,
        description=description,
        payload=tuple(payload),
        optional=tuple(optional),
        also=tuple(also),
    )
    for level in declared.severities:
        if level not in SEVERITIES:
            raise EventContractError(f"{name}: unknown severity {level!r}")
    if set(declared.payload) & set(declared.optional):
        raise EventContractError(f"{name}: a key is both always and sometimes in the payload")
    existing = REGISTRY.get(name)
    if existing is not None and existing != declared:
        raise EventContractError(f"event type {name!r} is declared twice, differently")
    REGISTRY[name] = declared
    return name


def load() -> dict[str, EventType]:
    """Every declared type: imports each declaring app's `events` module (by name)."""
    for app in DECLARING_APPS:
        import_module(f"{app}.events")
    return REGISTRY


def lookup(name: str) -> EventType:
    declared = REGISTRY.get(name) or load().get(name)
    if declared is None:
        raise EventContractError(f"unknown event type {name!r}: declare it in its app's events.py")
    return declared


def check(name: str, severity: str | None, data: Mapping[str, Any] | None) -> str:
    """Validate one event against the registry; returns its severity (the declared one when
    `severity` is None). Raises EventContractError naming the type and what is wrong."""
    declared = lookup(name)
    severity = severity or declared.severity
    problems = declared.problems(severity, data or {})
    if problems:
        raise EventContractError(f"event {name!r}: " + "; ".join(problems))
    return severity


# --- the writer, installed by the notifications app ----------------------------------------

_writer: Callable[..., Any] | None = None


def install_writer(writer: Callable[..., Any]) -> None:
    global _writer
    _writer = writer


def record(type: str, title: str, message: str = "", **fields: Any) -> Any:
    """Write one event from a layer below notifications (its record_event's arguments)."""
    if _writer is None:
        raise EventContractError("no event writer is installed (is the notifications app installed?)")
    return _writer(type, title, message, **fields)


# --- the user documentation ----------------------------------------------------------------

DOC_PATH = "docs/events.md"


def markdown() -> str:
    """docs/events.md: every declared type, by app, from the registry (`manage.py events_doc`)."""
    declared = load()
    lines = [
        "# Event types",
        "",
        "<!-- Generated from the event-type registry by `manage.py events_doc`: do not edit by hand. -->",
        "",
        "Every event in the log (`GET /api/events`, the WebSocket feed, webhooks) has one of these",
        "types. Each is declared once, in its app's `events.py`; the event log refuses any other type,",
        "and any payload (the event's `data`) with a missing or an undeclared key. An event written for a",
        "tokenless caller of a trusted network also has `authenticated: false` and `client` in its data.",
        "Severity: the usual one, then (in brackets) others the type may be written with.",
        "",
    ]
    for app in DECLARING_APPS:
        types = sorted((t for t in declared.values() if t.module == f"{app}.events"), key=lambda t: t.name)
        if not types:
            continue
        lines += [f"## {app}", "", "| type | severity | payload | what happened |", "|---|---|---|---|"]
        for event in types:
            severity = event.severity + (f" ({', '.join(event.also)})" if event.also else "")
            keys = [f"`{key}`" for key in event.payload] + [f"`{key}`?" for key in event.optional]
            lines.append(f"| `{event.name}` | {severity} | {', '.join(keys) or '—'} | {event.description} |")
        lines.append("")
    lines += ["`key`? : present in some events of the type only.", ""]
    return "\n".join(lines)
