"""The open waits of a process, woken as soon as their lease changes, holding no thread and no
database connection while they wait.

- `Waits.listen(key)` registers a wait; it registers before reading its lease, so a change
  committed in between still wakes it.
- `Waits.notify(*keys, handed=...)` wakes the waits of leases whose change this process committed
  (any thread); `handed` gives some of them their outcome, so that they answer without reading it.
- `Waits.is_open(key)`: whether a wait on that lease is open in this process now.
- One poller per event loop, while any wait is open there, asks every POLL_SECONDS which of all
  those leases changed in another process: one call of `poll(keys)` (one query, given by the lease
  service, which also stamps the open waits' signs of life), then wakes those.
- THREAD is the one thread, and so the one database connection, that every wait of a process
  shares: for the poller, and (leases.api.wait.one_thread_for_waits) for the synchronous steps of
  /gpu/wait requests. Its connection stays open between those requests (Django would close it at
  the end of each) and is closed when the process's last wait ends.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from django.db import connections

from gaiaorch.connections import keep_in_this_thread

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.5  # a grant committed by another process reaches its wait this late at most
# The waits' thread serves many requests one after another: the end of one must not close the
# connection the others use (it is still closed if it breaks, and when the last wait ends).
THREAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lease-waits", initializer=keep_in_this_thread)


def close_connection() -> None:
    """Close the waits' connection once the work queued before this call is done (no wait open)."""
    THREAD.submit(connections.close_all)


@dataclass(eq=False)
class Waiter:
    key: str
    loop: asyncio.AbstractEventLoop
    event: asyncio.Event = field(default_factory=asyncio.Event)
    handed: Any = None  # the outcome a notification brought, if it brought one

    async def wait(self, seconds: float) -> bool:
        """Until notified (True) or `seconds` pass (False); a notification is used up."""
        with suppress(TimeoutError):
            await asyncio.wait_for(self.event.wait(), seconds)
        woken = self.event.is_set()
        self.event.clear()
        return woken

    def take(self) -> Any:
        """The outcome the last notification handed over (None if it handed none); used up."""
        handed, self.handed = self.handed, None
        return handed

    def _woken(self, handed: Any) -> None:  # on the waiter's loop
        if handed is not None:
            self.handed = handed
        self.event.set()


class Waits:
    def __init__(self, poll: Callable[[list[str]], Iterable[str]]):
        self._poll = poll
        self._lock = threading.Lock()  # commits arrive on worker threads; waiters live on event loops
        self._waiters: dict[str, set[Waiter]] = {}
        self._pollers: dict[asyncio.AbstractEventLoop, asyncio.Task] = {}

    def open(self) -> int:
        with self._lock:
            return sum(len(waiters) for waiters in self._waiters.values())

    def is_open(self, key: str) -> bool:
        with self._lock:
            return key in self._waiters

    def notify(self, *keys: str, handed: Mapping[str, Any] | None = None) -> None:
        """A commit of this process changed these leases; `handed`: the outcome of some of them,
        for their waits to answer with."""
        self._wake(keys, handed or {})

    def _wake(self, keys: Iterable[str], handed: Mapping[str, Any]) -> None:
        with self._lock:
            waiters = [(waiter, handed.get(key)) for key in keys for waiter in self._waiters.get(key, ())]
        for waiter, outcome in waiters:
            if not waiter.loop.is_closed():
                waiter.loop.call_soon_threadsafe(waiter._woken, outcome)

    @contextmanager
    def listen(self, key: str) -> Iterator[Waiter]:
        loop = asyncio.get_running_loop()
        waiter = Waiter(key, loop)
        with self._lock:
            self._waiters.setdefault(key, set()).add(waiter)
        if loop not in self._pollers:
            # A context of its own: the poller outlives the request that started it.
            self._pollers[loop] = loop.create_task(self._poll_loop(loop), context=contextvars.Context())
        try:
            yield waiter
        finally:
            with self._lock:
                self._waiters[key].discard(waiter)
                if not self._waiters[key]:
                    del self._waiters[key]
            if not self._keys_of(loop):
                self._stop_poller(loop)

    def _keys_of(self, loop: asyncio.AbstractEventLoop) -> list[str]:
        with self._lock:
            return [key for key, waiters in self._waiters.items() if any(w.loop is loop for w in waiters)]

    def _stop_poller(self, loop: asyncio.AbstractEventLoop) -> None:
        poller = self._pollers.pop(loop, None)
        if poller is not None:
            poller.cancel()
            close_connection()  # no wait open here: hold no connection either

    async def _poll_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        poll = sync_to_async(self._poll, thread_sensitive=False, executor=THREAD)
        while True:
            await asyncio.sleep(POLL_SECONDS)
            keys = self._keys_of(loop)
            try:
                changed = await poll(keys) if keys else []
            except Exception:  # a database outage: the waits answer on their own at their timeout
                logger.warning("could not poll %d open lease waits", len(keys), exc_info=True)
                await sync_to_async(connections.close_all, thread_sensitive=False, executor=THREAD)()
                continue
            self._wake(changed, {})
