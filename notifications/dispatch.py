"""What happens to an event after its transaction commits.

1. Wake the event relays (notifications.hub) of every web process through the channel layer:
   in-process with the in-memory layer, across processes with Redis. The relays also poll the log,
   so a lost wake-up only costs one poll interval.
2. Hand the event's webhook deliveries (outbox rows written with it) to the worker.
Neither may ever fail or undo the committed change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django_q.tasks import async_task

logger = logging.getLogger(__name__)

EVENTS_GROUP = "events"
_announcements: set[asyncio.Task] = set()  # strong references until each send finishes


def event_committed(event_id: int, delivery_ids: Iterable[int] = ()) -> None:
    announce(event_id)
    for delivery_id in delivery_ids:
        enqueue_delivery(delivery_id, attempt=1)


def enqueue_delivery(delivery_id: int, attempt: int) -> None:
    """Queue one webhook attempt; if the broker is down, the ticker retries once the claim lapses."""
    try:
        async_task(
            "notifications.tasks.deliver_webhook",
            delivery_id,
            attempt,
            task_name=f"webhook-delivery-{delivery_id}-{attempt}",
            group="webhooks",
        )
    except Exception:
        logger.warning("could not queue webhook delivery %s", delivery_id, exc_info=True)


def announce(event_id: int) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    message = {"type": "events.available", "last_id": event_id}
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is None:
        try:
            async_to_sync(layer.group_send)(EVENTS_GROUP, message)
        except Exception:  # a broken channel layer must never undo or fail a committed change
            logger.warning("could not announce event %s; relays will poll for it", event_id, exc_info=True)
        return
    # Committed from inside an event loop (async code): async_to_sync would refuse, so schedule it.
    task = loop.create_task(_send(layer, message))
    _announcements.add(task)
    task.add_done_callback(_announcements.discard)


async def _send(layer, message: dict) -> None:
    try:
        await layer.group_send(EVENTS_GROUP, message)
    except Exception:
        logger.warning("could not announce event %s", message["last_id"], exc_info=True)
