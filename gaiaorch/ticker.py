"""Periodic housekeeping that must run more often than django-q2's scheduler allows.

Apps register jobs in their AppConfig.ready(); `manage.py ticker` (started by `runstack`) runs them.
Every job calls services, which are safe to run from several ticker processes at once (row locks
and conditional updates), so scale-out needs no leader election.

- `every(seconds)`: a short function called on a fixed cadence (lease expiry, stale-job recovery);
  `seconds` may be a function returning it, read after each run, so a cadence taken from the
  configuration is not parsed while apps load.
- `follower`: a long-running function (e.g. following Docker's event stream) restarted with
  backoff whenever it returns or raises.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from django.db import close_old_connections

logger = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 30.0


@dataclass
class PeriodicJob:
    name: str
    interval: float | Callable[[], float]
    func: Callable[[], object]
    next_run: float = field(default=0.0)

    def seconds(self) -> float:
        return self.interval() if callable(self.interval) else self.interval


PERIODIC: dict[str, PeriodicJob] = {}
FOLLOWERS: dict[str, Callable[[threading.Event], object]] = {}


def every(seconds: float | Callable[[], float], name: str | None = None):
    """Decorator: run the function every `seconds` in the ticker process."""

    def register(func: Callable[[], object]):
        key = name or f"{func.__module__}.{func.__qualname__}"
        PERIODIC[key] = PeriodicJob(key, seconds, func)
        return func

    return register


def follower(name: str | None = None):
    """Decorator: run a long-lived function (given a stop event) in its own thread."""

    def register(func: Callable[[threading.Event], object]):
        FOLLOWERS[name or f"{func.__module__}.{func.__qualname__}"] = func
        return func

    return register


def run_due(now: float) -> None:
    for job in PERIODIC.values():
        if now < job.next_run:
            continue
        try:
            job.next_run = now + job.seconds()
            job.func()
        except Exception:  # one failing job must not stop the others
            logger.exception("periodic job %s failed", job.name)
        finally:
            close_old_connections()


def keep_following(name: str, func: Callable[[threading.Event], object], stop: threading.Event) -> None:
    backoff = 0.5
    while not stop.is_set():
        started = time.monotonic()
        try:
            func(stop)
        except Exception:
            logger.exception("follower %s failed; restarting in %.1f s", name, backoff)
        finally:
            close_old_connections()
        backoff = (
            0.5 if time.monotonic() - started > MAX_BACKOFF_SECONDS else min(backoff * 2, MAX_BACKOFF_SECONDS)
        )
        stop.wait(backoff)


def run_forever(stop: threading.Event, resolution: float = 0.1) -> None:
    threads = [
        threading.Thread(target=keep_following, args=(name, func, stop), name=name, daemon=True)
        for name, func in FOLLOWERS.items()
    ]
    for thread in threads:
        thread.start()
    while not stop.is_set():
        run_due(time.monotonic())
        stop.wait(resolution)
    for thread in threads:
        thread.join(timeout=5)
