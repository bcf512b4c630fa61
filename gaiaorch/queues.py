"""The task queue (django-q2) as the apps use it: long work only, and a broker that may be down.

Only work that drives GPUs and containers goes through the queue (handoffs, container operations)
plus the tiny worker heartbeat; webhook deliveries never do (notifications.delivery runs them), so
nothing can make a handoff wait behind notifications.

A job row is always committed before its task is queued. Queuing happens after commit and never
fails the request that created the job: when the broker refuses, the caller marks the job as not
queued and the ticker's recovery queues it again as soon as the broker answers. Services that
start jobs call `require_broker()` first, so a broker that is down already is a clear 503 before
anything is committed.
"""

from __future__ import annotations

import logging
from typing import Any

from gaiaorch.connections import keep_in_this_thread
from gaiaorch.errors import Unavailable

logger = logging.getLogger(__name__)


def keep_worker_connections(sender, **kwargs) -> None:
    """django-q2's post_spawn, in each new worker process: its connections last from task to task,
    so a handoff's first query does not wait for a new connection (gaiaorch.connections)."""
    keep_in_this_thread(checked=True)


def enqueue(func: str, *args: Any, **options: Any) -> bool:
    """Queue one task; False (logged, never raised) when the broker refused it."""
    from django_q.tasks import async_task

    try:
        async_task(func, *args, **options)
    except Exception:  # any broker failure (Redis down, database locked) must not fail the caller
        logger.warning("could not queue %s%r; recovery queues it again", func, args, exc_info=True)
        return False
    return True


def broker_problem() -> str:
    """Why the broker cannot take a task now, or "" when it answers."""
    from django_q.brokers import get_broker

    try:
        get_broker().ping()
    except Exception as exc:  # redis.ConnectionError, TimeoutError, OSError: all mean "down"
        return f"{type(exc).__name__}: {exc}"
    return ""


def require_broker() -> None:
    """Before committing a job: the broker must answer now (503 otherwise, nothing committed)."""
    problem = broker_problem()
    if problem:
        raise Unavailable(
            f"The task queue does not answer ({problem}); nothing was started, retry later.",
            code="queue_unavailable",
        )
