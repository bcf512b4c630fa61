"""The one writer of the event log. Every app calls record_event inside its own transaction."""

from __future__ import annotations

from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from notifications import dispatch
from notifications.models import Event, Severity

# Any constant works; it only has to be the same for every writer of the event log.
EVENT_ORDER_LOCK = 0x6A1A0E


def _hold_event_order_lock() -> None:
    # PostgreSQL hands out ids before commit, so a later id could commit first and a reader
    # tailing "id > last seen" would skip the earlier one. Serialising event writers until
    # commit makes ids visible in order. SQLite already serialises all writers.
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [EVENT_ORDER_LOCK])


def record_event(
    type: str,
    title: str,
    message: str = "",
    *,
    actor: str = "system",
    severity: str = Severity.INFO,
    data: dict[str, Any] | None = None,
    subject: tuple[str, Any] | None = None,
    correlation_id: str = "",
) -> Event:
    """Append one event; it is pushed to listeners only once the caller's transaction commits."""
    subject_kind, subject_id = subject if subject else ("", "")
    with transaction.atomic():
        _hold_event_order_lock()
        event = Event.objects.create(
            type=type,
            severity=severity,
            title=title[:200],
            message=message,
            data=data or {},
            actor=actor[:150],
            subject_kind=subject_kind,
            subject_id=str(subject_id),
            correlation_id=str(correlation_id or ""),
            created_at=timezone.now(),
        )
        transaction.on_commit(lambda: dispatch.event_committed(event))
    return event
