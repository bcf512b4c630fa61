"""Events as subscribers see them: the wire shape, type filters and reads by id."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from django.db import connection
from django.db.models import Model, QuerySet

from notifications.models import Event

# The event log's order lock (an advisory lock key on PostgreSQL); any constant works, the same for
# every writer and reader of the log.
EVENT_ORDER_LOCK = 0x6A1A0E

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


def visible_horizon() -> int | None:
    """The newest event id such that every event up to it is visible now and none can still
    appear below it; None where every committed event is such (SQLite: its writers take turns).

    On PostgreSQL an id is taken before its commit, so a later id may be visible while an earlier
    one is not yet. Every event writer holds the order lock shared until it commits
    (notifications.services); taking it exclusively waits for the writers in flight, and the
    newest id read in the next statement, with the lock already given back, is the horizon."""
    if connection.vendor != "postgresql":
        return None
    return visible_horizons()[0]


def visible_horizons(*others: type[Model]) -> tuple[int, ...]:
    """The newest event id as visible_horizon reads it, then the newest id of each of `others`, read
    in the same statement (0 for none); on SQLite, whose writers take turns, without the lock.

    A row of `others` whose transaction holds the order lock from before the row's id is taken (it
    writes an event first) cannot appear below its newest id later; rows written otherwise need a
    rule of their own."""
    quote = connection.ops.quote_name
    tables: tuple[type[Model], ...] = (Event, *others)
    newest = ", ".join(
        f"(SELECT max({quote(model._meta.pk.column)}) FROM {quote(model._meta.db_table)})" for model in tables
    )
    with connection.cursor() as cursor:
        if connection.vendor != "postgresql":
            cursor.execute(f"SELECT {newest}")
            return tuple(value or 0 for value in cursor.fetchone())
        # why: waits until no event writer is between taking its ids and committing (see above).
        cursor.execute("SELECT pg_advisory_lock(%s)", [EVENT_ORDER_LOCK])
        # The statement's snapshot is taken before the unlock in it: nothing in flight is missed.
        cursor.execute(f"SELECT {newest}, pg_advisory_unlock(%s)", [EVENT_ORDER_LOCK])
        return tuple(value or 0 for value in cursor.fetchone()[:-1])


def visible(events: QuerySet[Event]) -> QuerySet[Event]:
    """Only the events that can be shown without one below them appearing later (visible_horizon)."""
    horizon = visible_horizon()
    return events if horizon is None else events.filter(id__lte=horizon)


def latest_event_id() -> int:
    """The newest event id a tailing reader may start after (the horizon itself on PostgreSQL)."""
    horizon = visible_horizon()
    if horizon is not None:
        return horizon
    return Event.objects.order_by("-id").values_list("id", flat=True).first() or 0


def items_after(cursor: int, upto: int | None, limit: int) -> list[FeedItem]:
    """Events with cursor < id <= upto, oldest first (an indexed range scan on the primary key),
    none of them above the visible horizon."""
    events = visible(Event.objects.filter(id__gt=cursor))
    if upto is not None:
        events = events.filter(id__lte=upto)
    return [feed_item(event) for event in events.order_by("id")[:limit]]


def replay_cursor(after: int, limit: int) -> int:
    """Where a replay from `after` starts so that at most `limit` events are replayed."""
    older = Event.objects.filter(id__gt=after).order_by("-id").values_list("id", flat=True)
    cut = next(iter(older[limit : limit + 1]), 0)
    return max(after, cut)
