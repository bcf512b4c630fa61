"""What happens to an event after its transaction commits: wake the event relays
(notifications.hub) of every web process of this host through their wake-up sockets
(gaiaorch.wakeups), and of every web process through the channel layer, in-process with the
in-memory layer, across hosts with Redis. The relays also poll the log, so a lost wake-up only
costs one poll interval. It may never fail or undo the committed change. (Webhook deliveries need no wake-up:
the ticker's delivery pump, notifications.delivery, takes due outbox rows itself.)
"""

from __future__ import annotations

import asyncio
import logging
import os

from asgiref.sync import SyncToAsync, async_to_sync
from channels.layers import get_channel_layer

from gaiaorch import wakeups

logger = logging.getLogger(__name__)

EVENTS_GROUP = "events"
WAKE_CHANNEL = "events"
_announcements: set[asyncio.Task] = set()  # strong references until each send finishes


def event_committed(event_id: int) -> None:
    wakeups.wake(WAKE_CHANNEL, str(event_id).encode())  # a worker's event reaches the web at once
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
    if loop is not None:
        # Committed from inside an event loop (async code): async_to_sync would refuse, so schedule it.
        _schedule(layer, message)
        return
    server_loop = _server_loop()
    if server_loop is not None:
        # A thread of a web process (gaiaorch.serving): hand the send to the server's loop and go
        # on; waiting for it would hold the request's answer for a hop through a busy loop.
        server_loop.call_soon_threadsafe(_schedule, layer, message)
        return
    try:
        async_to_sync(layer.group_send)(EVENTS_GROUP, message)
    except Exception:  # a broken channel layer must never undo or fail a committed change
        logger.warning("could not announce event %s; relays will poll for it", event_id, exc_info=True)


def _server_loop() -> asyncio.AbstractEventLoop | None:
    """The running event loop of the web server this thread serves, if any (asgiref records it)."""
    loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    if getattr(SyncToAsync.threadlocal, "main_event_loop_pid", None) != os.getpid():
        return None  # recorded before a fork: that loop is the parent's
    return loop if loop is not None and loop.is_running() and not loop.is_closed() else None


def _schedule(layer, message: dict) -> None:
    task = asyncio.get_running_loop().create_task(_send(layer, message))
    _announcements.add(task)
    task.add_done_callback(_announcements.discard)


async def _send(layer, message: dict) -> None:
    try:
        await layer.group_send(EVENTS_GROUP, message)
    except Exception:
        logger.warning("could not announce event %s", message["last_id"], exc_info=True)
