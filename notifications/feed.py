"""Events as subscribers see them: the wire shape, type filters and reads by id."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from notifications.models import Event

GLOB_CHARACTERS = frozenset("*?[")


@dataclass(frozen=True, slots=True)
class FeedItem:
    id: int
    type: str
    text: str  # the notification, JSON-encoded once for every subscriber


NOTICE_PREFIX = "notification."  # notices for users; the seed named them without the prefix


def notification(event: Event) -> dict[str, Any]:
    """The seed's notification shape, plus the event log's own fields.

    `notification_type` is the seed's name for the notices it defined (`oracle_fallback` for the
    event type `notification.oracle_fallback`) and the dotted event type for every other event;
    `type` is always the dotted event type."""
    return {
        "id": event.id,
        "notification_id": str(event.id),
        "notification_type": event.type.removeprefix(NOTICE_PREFIX),
        "type": event.type,
        "title": event.title,
        "message": event.message,
        "timestamp": event.created_at.isoformat(),
        "data": event.data,
        "severity": event.severity,
        "actor": event.actor,
        "subject_kind": event.subject_kind,
        "subject_id": event.subject_id,
        "correlation_id": event.correlation_id,
    }


def feed_item(event: Event) -> FeedItem:
    return FeedItem(event.id, event.type, json.dumps(notification(event), separators=(",", ":")))


def matches(pattern: str, event_type: str) -> bool:
    """`handoff.*` is a glob; a plain `lease` matches `lease` and `lease.<anything>`."""
    if GLOB_CHARACTERS.intersection(pattern):
        return fnmatchcase(event_type, pattern)
    return event_type == pattern or event_type.startswith(pattern + ".")


def type_filter(patterns: Iterable[str]) -> Callable[[str], bool]:
    patterns = tuple(patterns)
    if not patterns:
        return lambda event_type: True
    return lambda event_type: any(matches(pattern, event_type) for pattern in patterns)


def latest_event_id() -> int:
    return Event.objects.order_by("-id").values_list("id", flat=True).first() or 0


def items_after(cursor: int, upto: int | None, limit: int) -> list[FeedItem]:
    """Events with cursor < id <= upto, oldest first (an indexed range scan on the primary key)."""
    events = Event.objects.filter(id__gt=cursor)
    if upto is not None:
        events = events.filter(id__lte=upto)
    return [feed_item(event) for event in events.order_by("id")[:limit]]


def replay_cursor(after: int, limit: int) -> int:
    """Where a replay from `after` starts so that at most `limit` events are replayed."""
    older = Event.objects.filter(id__gt=after).order_by("-id").values_list("id", flat=True)
    cut = next(iter(older[limit : limit + 1]), 0)
    return max(after, cut)
