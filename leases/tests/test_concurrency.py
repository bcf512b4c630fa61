"""Races on the real PostgreSQL server: many connections acquiring the same GPU at once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from leases import services
from leases.models import Lease, LeaseStatus

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

CLIENTS = 32


@pytest.fixture
def many_requesters(settings):
    names = [f"worker-{number:02d}" for number in range(CLIENTS)]
    # Plain-process requesters only; no handoff types name the shipped services any more.
    settings.GAIAORCH = {**settings.GAIAORCH, "services": {name: {} for name in names}, "handoffs": {}}
    settings.GPU_BACKEND = "none"
    settings.GPU_COUNT = 1
    return names


def race(names, action):
    """Run action(name) for every name at the same instant, each on its own connection."""
    start = threading.Barrier(len(names))

    def one(name):
        try:
            start.wait()
            return action(name)
        finally:
            connection.close()

    with ThreadPoolExecutor(len(names)) as pool:
        return list(pool.map(one, names))


def acquire(name):
    return services.acquire(requester=name, reason="race", actor=name)


def test_it_grants_exactly_one_of_32_concurrent_acquires(many_requesters):
    assert connection.vendor == "postgresql"
    results = race(many_requesters, acquire)
    granted = [result for result in results if result.granted]
    assert len(granted) == 1 and granted[0].lease.fencing_token == 1
    assert Lease.objects.filter(status=LeaseStatus.ACTIVE).count() == 1
    assert Lease.objects.filter(status=LeaseStatus.WAITING).count() == CLIENTS - 1
    positions = sorted(result.queue_position for result in results if not result.granted)
    assert positions == list(range(1, CLIENTS))
    status = services.gpu_status(0)
    assert [entry["position"] for entry in status["queue"]] == list(range(1, CLIENTS))


def test_it_never_grants_twice_when_holders_release_concurrently(many_requesters):
    race(many_requesters, acquire)
    tokens = [1]
    for _ in range(CLIENTS - 1):
        holder = services.current_holder(0)
        # Release and a burst of re-acquires from everyone race each other.
        names = list(dict.fromkeys([holder.requester, *many_requesters[:7]]))
        race(names, lambda name, h=holder: _release_or_acquire(name, h))
        after = services.current_holder(0)
        tokens.append(after.fencing_token)
        assert Lease.objects.filter(status=LeaseStatus.ACTIVE).count() == 1
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)


def _release_or_acquire(name, holder):
    if name == holder.requester:
        return services.release(holder.id, actor=name)
    return acquire(name)
