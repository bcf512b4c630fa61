"""Wake a waiter of this process as soon as its lease changes.

/gpu/wait polls the database, which works across processes; a commit in the same process also
sets the signal of that lease's waiter, so a grant is seen at once instead of at the next poll.
Only the waiter of the changed lease wakes: no thundering herd when many wait for one GPU.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field


@dataclass(eq=False)
class Signal:
    loop: asyncio.AbstractEventLoop
    event: asyncio.Event = field(default_factory=asyncio.Event)

    def clear(self) -> None:
        self.event.clear()

    async def wait(self, seconds: float) -> None:
        """Until notified (since the last clear) or `seconds` pass."""
        with suppress(TimeoutError):
            await asyncio.wait_for(self.event.wait(), seconds)


_lock = threading.Lock()  # commits arrive on worker threads, signals live on event loops
_signals: dict[str, set[Signal]] = defaultdict(set)


def notify(key: str) -> None:
    with _lock:
        signals = list(_signals.get(key, ()))
    for signal in signals:
        if not signal.loop.is_closed():
            signal.loop.call_soon_threadsafe(signal.event.set)


@contextmanager
def listen(key: str) -> Iterator[Signal]:
    """Register before reading the state, so a change committed in between is never missed."""
    signal = Signal(asyncio.get_running_loop())
    with _lock:
        _signals[key].add(signal)
    try:
        yield signal
    finally:
        with _lock:
            _signals[key].discard(signal)
            if not _signals[key]:
                del _signals[key]
