"""What happens to an event after its transaction commits: wake the event relays
(notifications.hub) of every web process through the channel layer, in-process with the in-memory
layer, across processes with Redis. The relays also poll the log, so a lost wake-up only costs one
poll interval. It may never fail or undo the committed change. (Webhook deliveries need no wake-up:
the ticker's delivery pump, notifications.delivery, takes due outbox rows itself.)
"""

from __future__ import annotations

import asyncio
import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)

EVENTS_GROUP = "events"
_announcements: set[asyncio.Task] = set()  # strong references until each send finishes


def event_committed(event_id: int) -> None:
    announce(event_id)


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
