"""The per-process event relay: tails the event log and fans new events out to local subscribers.

Every web process runs one hub per event loop, started by its first WebSocket subscriber and
stopped after its last. It reads `Event.id > last_id` (a primary-key range scan) whenever a
writer of this host wakes it through its wake-up socket (gaiaorch.wakeups), whenever the channel
layer says "events.available", and at least every `relay_poll_ms`, so events written by another
process (the worker, the ticker, a management command) arrive at once even without Redis.
Ids become visible in id order (see record_event), so tailing by id never skips an event.

New rows are kept in a short ring; subscribers pull from it by their own cursor, and one that has
fallen behind the ring reads from the database instead. The hub never waits for a subscriber.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import time
import weakref
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from channels.layers import get_channel_layer
from django.db import connection

from gaiaorch import config, wakeups
from notifications import feed
from notifications.dispatch import EVENTS_GROUP, WAKE_CHANNEL

logger = logging.getLogger(__name__)

RING_SIZE = 2000
FETCH_BATCH = 500
GROUP_RENEW_SECONDS = 600.0


class Hub:
    def __init__(self) -> None:
        self.subscribers: set[object] = set()
        self.last_id = 0
        self.floor = 0  # the ring holds every event with floor < id <= last_id
        self.ring: deque[feed.FeedItem] = deque()
        self.advanced = asyncio.Event()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # why: join and leave interleave across awaits (start vs stop)
        self._tasks: list[asyncio.Task] = []
        self._executor: ThreadPoolExecutor | None = None
        self._listener: socket.socket | None = None
        self._poll_seconds = 0.05

    async def join(self, subscriber: object) -> None:
        # why: join/leave may interleave across awaits; the lock keeps start and stop from overlapping.
        async with self._lock:
            if not self._tasks:
                await self._start()
            self.subscribers.add(subscriber)

    async def leave(self, subscriber: object) -> None:
        async with self._lock:
            self.subscribers.discard(subscriber)
            if not self.subscribers and self._tasks:
                await self._stop()

    def wake(self, last_id: int | None = None) -> None:
        if last_id is None or last_id > self.last_id:
            self._wake.set()

    def items_after(self, cursor: int) -> list[feed.FeedItem] | None:
        """Ring items after the cursor, or None when the ring no longer reaches back that far."""
        if cursor < self.floor:
            return None
        newer = []
        for item in reversed(self.ring):
            if item.id <= cursor:
                break
            newer.append(item)
        newer.reverse()
        return newer

    async def _start(self) -> None:
        self._poll_seconds = config.current().notifications.relay_poll_ms / 1000
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="event-relay")
        try:
            self.last_id = self.floor = await self._read(feed.latest_event_id)
        except BaseException:
            self._executor.shutdown(wait=False)
            raise
        self.ring.clear()
        self._listener = wakeups.listen(WAKE_CHANNEL)
        if self._listener is not None:
            asyncio.get_running_loop().add_reader(self._listener.fileno(), self._woken)
        self._tasks = [asyncio.create_task(self._tail()), asyncio.create_task(self._listen())]

    def _woken(self) -> None:
        """A writer of this host committed events: the newest id it names, if any is new."""
        ids = [int(message) for message in wakeups.drain(self._listener) if message.isdigit()]
        self.wake(max(ids) if ids else None)

    async def _stop(self) -> None:
        if self._listener is not None:
            asyncio.get_running_loop().remove_reader(self._listener.fileno())
            wakeups.close(self._listener)
            self._listener = None
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        executor, self._executor = self._executor, None
        await asyncio.get_running_loop().run_in_executor(executor, _close_connection)
        executor.shutdown(wait=False)  # type: ignore[union-attr]  # running: _start made it

    async def _read(self, func, *args):
        """Database reads on the hub's own thread, so HTTP views never queue behind the relay."""
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, _with_fresh_connection, func, args
        )

    async def _tail(self) -> None:
        while True:
            self._wake.clear()  # cleared before reading, so a wake during the read means "read again"
            try:
                items = await self._read(feed.items_after, self.last_id, None, FETCH_BATCH)
            except Exception:
                logger.exception("event relay could not read the event log; retrying")
                items = []
            if items:
                self._advance(items)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_seconds)

    def _advance(self, items: list[feed.FeedItem]) -> None:
        self.ring.extend(items)
        while len(self.ring) > RING_SIZE:
            self.floor = self.ring.popleft().id
        self.last_id = items[-1].id
        advanced, self.advanced = self.advanced, asyncio.Event()
        advanced.set()

    async def _listen(self) -> None:
        """Wake-ups from writers through the channel layer (same process, or any process on Redis)."""
        layer = get_channel_layer()
        if layer is None:
            return
        channel = await layer.new_channel()
        # -inf, not 0: time.monotonic() counts from boot, and a box up for less than
        # GROUP_RENEW_SECONDS would otherwise never join the group.
        renewed_at = -math.inf
        try:
            while True:
                try:
                    if time.monotonic() - renewed_at > GROUP_RENEW_SECONDS:
                        await layer.group_add(EVENTS_GROUP, channel)
                        renewed_at = time.monotonic()
                    message = await asyncio.wait_for(layer.receive(channel), GROUP_RENEW_SECONDS)
                    self.wake(message.get("last_id"))
                except TimeoutError:
                    continue
                except Exception:  # the poll keeps events flowing while the layer is down
                    logger.warning("channel layer unavailable; relying on polling", exc_info=True)
                    renewed_at = -math.inf
                    await asyncio.sleep(self._poll_seconds * 10)
        finally:
            await _quietly(layer.group_discard(EVENTS_GROUP, channel))


def _close_connection() -> None:
    connection.close()  # looked up on the relay's thread: Django connections are per thread


def _with_fresh_connection(func, args):
    try:
        return func(*args)
    except Exception:
        connection.close()  # a broken connection is replaced on the next read
        raise


async def _quietly(coroutine) -> None:
    try:
        await coroutine
    except Exception:
        logger.debug("ignored channel layer error during shutdown", exc_info=True)


HUBS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def hub_for_running_loop() -> Hub:
    loop = asyncio.get_running_loop()
    if loop not in HUBS:
        HUBS[loop] = Hub()
    return HUBS[loop]
