"""Webhook deliveries, made by the ticker in a few threads of its own, never by the task queue.

The outbox row is the queue: the pump claims due deliveries with a conditional UPDATE (so several
tickers never make the same attempt) and runs each attempt in one of a fixed number of slots. An
attempt is bounded as a whole by its webhook's timeout (notifications.webhooks), so a slot is
never held longer than that plus two small writes, and one webhook never takes the last free
slot, so a dead receiver cannot delay the others. Handoffs and container operations, on the task
queue, never wait for any of this.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor

from django.db import close_old_connections

from gaiaorch import config
from notifications import services

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.1


def run(stop: threading.Event) -> None:
    """Ticker follower: keep up to notifications.delivery_concurrency attempts in flight until stopped."""
    slots = config.current().notifications.delivery_concurrency
    in_flight: dict[Future, str] = {}
    pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="webhook-delivery")
    try:
        while not stop.is_set():
            for future in [future for future in in_flight if future.done()]:
                del in_flight[future]
            free = slots - len(in_flight)
            if free:
                busy = Counter(in_flight.values())
                for delivery_id, attempt, webhook in services.claim_due_deliveries(free, busy, slots - 1):
                    in_flight[pool.submit(_attempt, delivery_id, attempt)] = webhook
            close_old_connections()
            stop.wait(POLL_SECONDS)
    finally:
        # An attempt cut short here stays claimed until its window passes, then is made again.
        pool.shutdown(wait=False, cancel_futures=True)


def _attempt(delivery_id: int, attempt: int) -> None:
    try:
        services.attempt_delivery(delivery_id, attempt)
    except Exception:  # a failed write is retried once the claim window passes
        logger.exception("webhook delivery %s attempt %s failed", delivery_id, attempt)
    finally:
        close_old_connections()
