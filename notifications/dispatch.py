"""What happens to an event after its transaction commits: wake the listeners of this process."""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from notifications.models import Event

logger = logging.getLogger(__name__)

EVENTS_GROUP = "events"


def event_committed(event: Event) -> None:
    """Tell WebSocket consumers a new event exists; they read it from the log in id order."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(EVENTS_GROUP, {"type": "events.available", "last_id": event.id})
    except Exception:  # a broken channel layer must never undo or fail a committed change
        logger.exception("could not announce event %s", event.id)
