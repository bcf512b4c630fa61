"""The event log's writer, webhook deliveries and Oracle-fallback notices.

Every app calls record_event inside its own transaction. The functions below it are the only
code that changes webhook deliveries and Oracle-fallback bursts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from gaiaorch import config, event_types, statements
from gaiaorch.auth import audit_marks
from gaiaorch.config import Webhook
from gaiaorch.redaction import public_origin
from notifications import dispatch, webhooks
from notifications.events import ORACLE_FALLBACK, WEBHOOK_GAVE_UP, WEBHOOK_RETRIED
from notifications.feed import EVENT_ORDER_LOCK, notification, type_filter
from notifications.models import DeliveryStatus, Event, OracleFallbackBurst, Severity, WebhookDelivery

# Events about webhooks are never sent to webhooks: a dead one would otherwise feed itself forever.
UNDELIVERED_PREFIX = "webhook."
# A claimed delivery is left alone this long beyond its timeout before it is attempted again.
CLAIM_MARGIN_SECONDS = 30


def _hold_event_order_lock() -> None:
    # PostgreSQL hands out ids before commit, so a later id could commit first and a reader
    # tailing "id > last seen" would skip the earlier one. Every event writer holds this lock
    # shared, from before its ids are taken until its commit; writers do not wait for each other.
    # A reader takes it exclusively for one statement to learn the id below which nothing is
    # still in flight (notifications.feed.visible_horizon). SQLite serialises all writers already.
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            # why: a reader must be able to wait for the writers in flight (see above); held until commit.
            cursor.execute("SELECT pg_advisory_xact_lock_shared(%s)", [EVENT_ORDER_LOCK])


def record_event(
    type: str,
    title: str,
    message: str = "",
    *,
    actor: str = "system",
    severity: str | None = None,
    data: dict[str, Any] | None = None,
    subject: tuple[str, Any] | None = None,
    correlation_id: str = "",
) -> Event:
    """Append one event (and its webhook outbox rows); it is pushed to listeners once committed.
    `type` is a declared event type (gaiaorch.event_types): an unknown type, a severity it does not
    allow (None: its declared one) or a payload (`data`) with a missing or an undeclared key raises
    EventContractError. An event written for a tokenless caller says so in its data
    (gaiaorch.auth.audit_marks)."""
    fields = {"actor": actor, "severity": severity, "data": data, "subject": subject}
    return record_events(
        [{"type": type, "title": title, "message": message, **fields, "correlation_id": correlation_id}]
    )[0]


def record_events(events: Sequence[Mapping[str, Any]]) -> list[Event]:
    """Append the events of one state change, in order, with one insert: each a mapping of
    record_event's arguments (type and title required), each written as record_event writes it."""
    if not events:
        return []
    events = [{**event, "severity": _checked_severity(**event)} for event in events]
    # No savepoint: an event that cannot be written must fail the caller's whole state change.
    with transaction.atomic(savepoint=False):
        _hold_event_order_lock()
        rows = [_event_row(**event) for event in events]
        statements.insert(rows)
        WebhookDelivery.objects.bulk_create(_delivery_rows(rows))
        last_id = rows[-1].id
        transaction.on_commit(lambda: dispatch.event_committed(last_id))
    return rows


def _checked_severity(
    type: str, title: str, *, severity: str | None = None, data: dict[str, Any] | None = None, **_: Any
) -> str:
    """The event's severity, once the registry allows its type, severity and payload (before any
    write, so a refused event leaves the caller's transaction usable for its own error handling)."""
    return event_types.check(type, severity, data)


def _event_row(
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
    subject_kind, subject_id = subject if subject else ("", "")
    return Event(
        type=type,
        severity=severity,
        title=title[:200],
        message=message,
        data={**(data or {}), **audit_marks()},
        actor=actor[:150],
        subject_kind=subject_kind,
        subject_id=str(subject_id),
        correlation_id=str(correlation_id or ""),
        created_at=timezone.now(),
    )


# --- webhooks -------------------------------------------------------------------------------


def _delivery_rows(events: Sequence[Event]) -> list[WebhookDelivery]:
    hooks = config.current().notifications.webhooks
    return [
        WebhookDelivery(
            event=event,
            webhook=hook.name,
            url=public_origin(hook.url),
            created_at=event.created_at,
            next_attempt_at=event.created_at,  # due at once: the ticker's delivery pump takes it
        )
        for event in events
        if not event.type.startswith(UNDELIVERED_PREFIX)
        for hook in hooks
        if type_filter(hook.types)(event.type)
    ]


def _claim_window(hook: Webhook) -> timedelta:
    return timedelta(seconds=hook.timeout_seconds + CLAIM_MARGIN_SECONDS)


def retry_delay(attempt: int) -> float:
    """Exponential backoff after the given failed attempt: base, 2*base, 4*base ... capped."""
    settings = config.current().notifications
    return min(settings.retry_base_seconds * 2 ** (attempt - 1), settings.retry_max_seconds)


def attempt_delivery(delivery_id: int, attempt: int) -> WebhookDelivery | None:
    """Make attempt number `attempt` of one delivery, unless another worker already made it."""
    delivery = WebhookDelivery.objects.select_related("event").filter(id=delivery_id).first()
    if delivery is None or delivery.status != DeliveryStatus.PENDING:
        return None
    hook = config.current().notifications.webhook_named(delivery.webhook)
    if hook is None:
        return _give_up(delivery_id, "the webhook is no longer configured")
    # why: a task can be queued twice (the ticker re-dispatches after a slow queue); comparing
    # attempts makes exactly one of them run attempt N.
    claimed = WebhookDelivery.objects.filter(
        id=delivery_id, status=DeliveryStatus.PENDING, attempts=attempt - 1
    ).update(attempts=attempt, next_attempt_at=timezone.now() + _claim_window(hook))
    if not claimed:
        return None
    outcome = webhooks.post(hook, notification(delivery.event), delivery_id)
    return _record_attempt(delivery_id, attempt, hook, outcome)


@transaction.atomic
def _record_attempt(
    delivery_id: int, attempt: int, hook: Webhook, outcome: webhooks.Outcome
) -> WebhookDelivery:
    # why: an operator's retry or give-up may change the same delivery while this attempt ends.
    delivery = WebhookDelivery.objects.select_for_update().get(id=delivery_id)
    now = timezone.now()
    delivery.attempt_log = [
        *delivery.attempt_log,
        {
            "attempt": attempt,
            "at": now.isoformat(),
            "status_code": outcome.status_code,
            "error": outcome.error,
            "duration_ms": outcome.duration_ms,
        },
    ]
    delivery.last_status_code, delivery.last_error = outcome.status_code, outcome.error
    if outcome.ok:
        delivery.status, delivery.delivered_at, delivery.next_attempt_at = DeliveryStatus.DELIVERED, now, None
    elif attempt >= hook.max_attempts:
        delivery.status, delivery.next_attempt_at = DeliveryStatus.FAILED, None
        _record_gave_up(delivery)
    else:
        delivery.next_attempt_at = now + timedelta(seconds=retry_delay(attempt))
    delivery.save()
    return delivery


@transaction.atomic
def _give_up(delivery_id: int, reason: str) -> WebhookDelivery | None:
    # why: a late attempt may be recording its outcome; exactly one of them ends the delivery.
    delivery = WebhookDelivery.objects.select_for_update().get(id=delivery_id)
    if delivery.status != DeliveryStatus.PENDING:
        return None
    delivery.status, delivery.next_attempt_at, delivery.last_error = DeliveryStatus.FAILED, None, reason
    delivery.save()
    _record_gave_up(delivery)
    return delivery


def _record_gave_up(delivery: WebhookDelivery) -> None:
    record_event(
        WEBHOOK_GAVE_UP,
        f"Webhook {delivery.webhook} gave up on event #{delivery.event_id}",
        f"After {delivery.attempts} attempt(s): {delivery.last_error or delivery.last_status_code}",
        severity=Severity.WARNING,
        data={"delivery_id": delivery.id, "event_id": delivery.event_id, "attempts": delivery.attempts},
        subject=("webhook_delivery", delivery.id),
    )


def retry_failed_deliveries(delivery_ids: list[int], actor: str) -> int:
    """Operator action: give failed deliveries one more attempt now. Returns how many."""
    with transaction.atomic():
        retried = WebhookDelivery.objects.filter(id__in=delivery_ids, status=DeliveryStatus.FAILED).update(
            status=DeliveryStatus.PENDING, next_attempt_at=timezone.now()
        )
        if retried:
            record_event(
                WEBHOOK_RETRIED,
                f"{retried} failed webhook deliveries retried by {actor}",
                actor=actor,
                data={"delivery_ids": sorted(delivery_ids), "retried": retried},
            )
    return retried


def claim_due_deliveries(
    free: int, in_flight: Mapping[str, int], per_webhook: int
) -> list[tuple[int, int, str]]:
    """Take up to `free` due attempts as (delivery id, attempt number, webhook), leaving out the
    webhooks that already have `per_webhook` attempts in flight here."""
    now, settings = timezone.now(), config.current().notifications
    taken = dict(in_flight)
    full = [webhook for webhook, count in taken.items() if count >= per_webhook]
    due = WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
    rows = due.exclude(webhook__in=full).order_by("next_attempt_at").values_list("id", "webhook", "attempts")
    claimed: list[tuple[int, int, str]] = []
    for delivery_id, webhook, attempts in rows[: free * 4]:
        if len(claimed) == free:
            break
        if taken.get(webhook, 0) >= per_webhook:
            continue
        hook = settings.webhook_named(webhook)
        window = _claim_window(hook) if hook else timedelta(seconds=CLAIM_MARGIN_SECONDS)
        # why: several tickers may run; the conditional update lets one of them make each attempt.
        still_due = WebhookDelivery.objects.filter(
            id=delivery_id, attempts=attempts, next_attempt_at__lte=now
        )
        if still_due.update(next_attempt_at=now + window):
            claimed.append((delivery_id, attempts + 1, webhook))
            taken[webhook] = taken.get(webhook, 0) + 1
    return claimed


# --- Oracle fallback ------------------------------------------------------------------------


@dataclass(frozen=True)
class OracleFallbackReport:
    burst: OracleFallbackBurst
    deduplicated: bool

    def body(self) -> dict[str, Any]:
        return {
            "success": True,
            "notification_id": str(self.burst.first_event_id),
            "event_id": self.burst.first_event_id,
            "deduplicated": self.deduplicated,
            "count": self.burst.count,
            "window_ends_at": self.burst.window_ends_at.isoformat(),
        }


def report_oracle_fallback(
    fallback_model: str,
    original_role: str,
    reason: str = "",
    timestamp: datetime | None = None,
    actor: str = "system",
) -> OracleFallbackReport:
    """Store and broadcast the notice, or fold it into the open burst of the same model and role."""
    try:
        return _report_oracle_fallback(fallback_model, original_role, reason, timestamp, actor)
    except IntegrityError:
        # why: two first notices raced; the open-burst constraint let one open it, so fold into it.
        return _report_oracle_fallback(fallback_model, original_role, reason, timestamp, actor)


@transaction.atomic
def _report_oracle_fallback(
    fallback_model: str, original_role: str, reason: str, timestamp: datetime | None, actor: str
) -> OracleFallbackReport:
    now = timezone.now()
    # why: two notices of one model and role must fold into one burst, not each count alone.
    burst = (
        OracleFallbackBurst.objects.select_for_update()
        .filter(fallback_model=fallback_model, original_role=original_role, closed_at__isnull=True)
        .first()
    )
    if burst and burst.window_ends_at > now:
        burst.repeats += 1
        burst.last_reason = reason or burst.last_reason
        burst.save(update_fields=["repeats", "last_reason"])
        return OracleFallbackReport(burst, deduplicated=True)
    if burst:
        _close_burst(burst, now)
    event = record_event(
        ORACLE_FALLBACK,
        f"Cloud model {fallback_model} is answering as {original_role}",
        f"Prime was unavailable, so {fallback_model} answered for {original_role}."
        + (f" Reason: {reason}" if reason else ""),
        actor=actor,
        severity=Severity.WARNING,
        data={
            "fallback_model": fallback_model,
            "original_role": original_role,
            "reason": reason,
            "reported_at": timestamp.isoformat() if timestamp else None,
            "timestamp": (timestamp or now).isoformat(),  # the seed's: the reporter's time, or receipt
            "count": 1,
            "summary": False,
        },
        subject=("oracle_fallback", original_role),
    )
    window = timedelta(seconds=config.current().notifications.oracle_dedup_window_seconds)
    burst = OracleFallbackBurst.objects.create(
        fallback_model=fallback_model,
        original_role=original_role,
        first_event=event,
        last_reason=reason,
        opened_at=now,
        window_ends_at=now + window,
    )
    return OracleFallbackReport(burst, deduplicated=False)


def _close_burst(burst: OracleFallbackBurst, now: datetime) -> None:
    """End a burst; when notices were folded into it, tell users how many in one summary event."""
    if burst.repeats:
        seconds = int((burst.window_ends_at - burst.opened_at).total_seconds())
        burst.summary_event = record_event(
            ORACLE_FALLBACK,
            f"Cloud model {burst.fallback_model} answered as {burst.original_role} {burst.count} times",
            f"{burst.count} fallback notices within {seconds} s; {burst.repeats} were folded into this one."
            + (f" Last reason: {burst.last_reason}" if burst.last_reason else ""),
            severity=Severity.WARNING,
            data={
                "fallback_model": burst.fallback_model,
                "original_role": burst.original_role,
                "reason": burst.last_reason,
                "count": burst.count,
                "summary": True,
                "timestamp": now.isoformat(),
                "first_event_id": burst.first_event_id,
                "window_seconds": seconds,
            },
            subject=("oracle_fallback", burst.original_role),
            correlation_id=str(burst.first_event_id),
        )
    burst.closed_at = now
    burst.save(update_fields=["summary_event", "closed_at"])


def close_expired_oracle_bursts(limit: int = 100) -> int:
    """Ticker: close bursts whose window has passed, sending their summaries. Returns how many."""
    now = timezone.now()
    expired = OracleFallbackBurst.objects.filter(closed_at__isnull=True, window_ends_at__lte=now)
    return sum(
        _close_expired_burst(burst_id, now) for burst_id in expired.values_list("id", flat=True)[:limit]
    )


@transaction.atomic
def _close_expired_burst(burst_id: int, now: datetime) -> bool:
    # why: a notice may be closing the same burst right now; the row lock lets exactly one close it.
    burst = (
        OracleFallbackBurst.objects.select_for_update().filter(id=burst_id, closed_at__isnull=True).first()
    )
    if burst is None or burst.window_ends_at > now:
        return False
    _close_burst(burst, now)
    return True
