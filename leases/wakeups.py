"""Wake waiters of this process as soon as a GPU's leases change.

/gpu/wait polls the database, which works across processes; a commit in the same process also
sets the waiters' events so a grant is seen at once instead of at the next poll.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict

_lock = threading.Lock()  # commits arrive on worker threads, waiters live on the event loop
_waiters: dict[int, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = defaultdict(set)


def notify(gpu: int) -> None:
    with _lock:
        waiting = list(_waiters.get(gpu, ()))
    for loop, event in waiting:
        if not loop.is_closed():
            loop.call_soon_threadsafe(event.set)


async def sleep(gpu: int, seconds: float) -> None:
    """Sleep up to `seconds`, or until a change of `gpu` commits in this process."""
    entry = (asyncio.get_running_loop(), asyncio.Event())
    with _lock:
        _waiters[gpu].add(entry)
    try:
        await asyncio.wait_for(entry[1].wait(), seconds)
    except TimeoutError:
        pass
    finally:
        with _lock:
            _waiters[gpu].discard(entry)
