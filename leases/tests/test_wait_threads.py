"""Open waits cost no thread and no database connection of their own (docs/leases.md, "Waiting")."""

from __future__ import annotations

import asyncio
import threading

import pytest
from asgiref.sync import sync_to_async
from django.db import connection, connections

from gaiaorch.auth import ensure_service_account
from leases import services
from leases.models import Lease, LeaseStatus
from leases.tests.test_waiter_life import Http

pytestmark = pytest.mark.django_db(transaction=True)

WAITS = 50
SPARE_THREADS = 2  # what a process may start once for all its waits: the poller's, Django's steps


@pytest.fixture
def waiters(settings):
    """WAITS plain-process requesters, each with a token."""
    names = [f"waiter-{number:02d}" for number in range(WAITS)]
    services_ = {**settings.GAIAORCH["services"], **{name: {} for name in names}}
    settings.GAIAORCH = {**settings.GAIAORCH, "services": services_}
    return {name: ensure_service_account(name, rotate=True) for name in names}


def postgres_connections() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        return cursor.fetchone()[0]


async def open_waits(tokens: dict[str, str]) -> list[Http]:
    requests = [
        Http(token, {"requester": name, "reason": "x", "timeout_seconds": 60})
        for name, token in tokens.items()
    ]
    for request in requests:
        await request.send()
    for _ in range(500):
        if await Lease.objects.filter(status=LeaseStatus.WAITING).acount() == len(requests):
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.5)  # every wait has entered its idle part
    return requests


async def measure(tokens: dict[str, str], count_connections) -> tuple[tuple[int, int], tuple[int, int]]:
    holder = (
        await sync_to_async(services.acquire)(requester="gaia-core", reason="x", actor="gaia-core")
    ).lease
    first, *rest = list(tokens.items())
    # One wait first: whatever a process starts once for all waits is running before the count.
    warm = await open_waits(dict([first]))
    idle = (threading.active_count(), await sync_to_async(count_connections)())
    requests = warm + await open_waits(dict(rest))
    busy = (threading.active_count(), await sync_to_async(count_connections)())
    await sync_to_async(services.release)(holder.id, actor="gaia-core")
    for request in requests:
        await request.hang_up()
    await sync_to_async(connections.close_all)()  # this test's own, on the thread its calls used
    return idle, busy


async def test_it_holds_no_thread_per_open_wait(waiters):
    (threads_before, _), (threads_open, _) = await measure(waiters, lambda: 0)
    assert threads_open <= threads_before + SPARE_THREADS, (threads_before, threads_open)


@pytest.mark.postgres
async def test_it_holds_no_thread_and_no_connection_per_open_wait_on_postgresql(waiters):
    (threads_before, connections_before), (threads_open, connections_open) = await measure(
        waiters, postgres_connections
    )
    assert threads_open <= threads_before + SPARE_THREADS, (threads_before, threads_open)
    assert connections_open <= connections_before + 1, (connections_before, connections_open)
