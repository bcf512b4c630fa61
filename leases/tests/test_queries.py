"""The lease hot path in SQL statements: status reads are one consistent snapshot of a constant
number of queries; an acquire and a release carry what they read instead of reading it again."""

from __future__ import annotations

import threading
from datetime import timedelta
from unittest import mock

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from conftest import client_for_token
from leases import services

pytestmark = pytest.mark.django_db

# Statements on the lease and event tables (the token and the rights checks are counted apart).
ACQUIRE_STATEMENTS = 5  # GPU lock, live leases, the lease inserted granted, the counters, both events
RELEASE_STATEMENTS = 7  # the lease (rights), GPU lock, live leases, ended, next granted, counters, events


LEASE_WORK = ("leases_", "notifications_")


def statements(call, *, lease_work_only: bool = True) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = call()
    assert response.status_code < 300, response.content
    queries = [query["sql"] for query in captured.captured_queries]
    return len([sql for sql in queries if not lease_work_only or any(table in sql for table in LEASE_WORK)])


@pytest.fixture
def gpus(settings):
    def count(number: int) -> None:
        settings.GPU_BACKEND = "none"
        settings.GPU_COUNT = number

    return count


def queue_on_every_gpu(number: int) -> None:
    for index in range(number):
        for requester in ("gaia-core", "gaia-study", "gaia-core-candidate"):
            services.acquire(requester=requester, reason="x", gpu=index, actor=requester)


@pytest.mark.parametrize("path", ["/gpu/status", "/api/gpu/status/", "/status"])
def test_it_reads_the_status_in_as_many_queries_for_16_gpus_as_for_1(gpus, anonymous_client, path):
    counts = []
    for number in (1, 16):
        gpus(number)
        queue_on_every_gpu(number)
        anonymous_client.get(path)  # the first read of a new GPU count creates its rows
        counts.append(statements(lambda: anonymous_client.get(path), lease_work_only=False))
    assert counts[0] == counts[1], counts


def test_it_acquires_a_free_gpu_in_few_statements(service_token):
    core = client_for_token(service_token("gaia-core"))
    core.get("/gpu/status")
    body = {"requester": "gaia-core", "reason": "x"}
    assert statements(lambda: core.post("/gpu/acquire", body, format="json")) <= ACQUIRE_STATEMENTS


def test_it_releases_and_grants_the_next_waiter_in_few_statements(service_token):
    core = client_for_token(service_token("gaia-core"))
    study = client_for_token(service_token("gaia-study"))
    held = core.post("/gpu/acquire", {"requester": "gaia-core", "reason": "x"}, format="json").json()
    study.post("/gpu/acquire", {"requester": "gaia-study", "reason": "x"}, format="json")
    release = lambda: core.post("/gpu/release", {"lease_id": held["lease_id"]}, format="json")  # noqa: E731
    assert statements(release) <= RELEASE_STATEMENTS


def test_it_writes_a_transitions_events_in_one_insert(service_token):
    core = client_for_token(service_token("gaia-core"))
    core.get("/gpu/status")
    with CaptureQueriesContext(connection) as captured:
        core.post("/gpu/acquire", {"requester": "gaia-core", "reason": "x"}, format="json")
    inserts = [
        query for query in captured.captured_queries if 'INSERT INTO "notifications_event"' in query["sql"]
    ]
    assert len(inserts) == 1


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_it_reads_a_consistent_snapshot_while_grants_commit():
    """A holder's fencing token is always below the GPU's next token in one status answer."""
    stop = threading.Event()

    def cycle(requester: str) -> None:
        try:
            while not stop.is_set():
                lease = services.acquire(requester=requester, reason="x", actor=requester).lease
                services.release(lease.id, actor=requester)
        finally:
            connection.close()

    cycling = [threading.Thread(target=cycle, args=(name,)) for name in ("gaia-core", "gaia-study")]
    services.gpu_status()
    for thread in cycling:
        thread.start()
    torn = []
    try:
        for _ in range(400):
            entry = services.gpu_status(0)
            if entry["fencing_token"] is not None and entry["fencing_token"] >= entry["next_fencing_token"]:
                torn.append(entry)
    finally:
        stop.set()
        for thread in cycling:
            thread.join()
    assert torn == []


@pytest.mark.django_db(transaction=True)
def test_it_reads_an_unchanged_status_again_in_one_statement(gpus):
    gpus(16)
    queue_on_every_gpu(16)
    services.gpu_status()
    with CaptureQueriesContext(connection) as captured:
        again = services.gpu_status()
    assert len(captured.captured_queries) == 1, [query["sql"] for query in captured.captured_queries]
    assert again["gpus"][3]["owner"] == "gaia-core"


@pytest.mark.django_db(transaction=True)
def test_it_reads_a_status_changed_by_another_connection_at_once(gpus):
    gpus(2)
    services.gpu_status()

    def acquire_elsewhere() -> None:
        try:
            services.acquire(requester="gaia-study", reason="x", gpu=1, actor="gaia-study")
        finally:
            connection.close()

    thread = threading.Thread(target=acquire_elsewhere)
    thread.start()
    thread.join()
    assert services.gpu_status(1)["owner"] == "gaia-study"


@pytest.mark.django_db(transaction=True)
def test_it_expires_a_lease_fallen_due_since_an_unchanged_read(gpus):
    gpus(1)
    services.acquire(requester="gaia-core", reason="x", gpu=0, ttl_seconds=60, actor="gaia-core")
    services.acquire(requester="gaia-study", reason="x", gpu=0, ttl_seconds=3600, actor="gaia-study")
    assert services.gpu_status(0)["owner"] == "gaia-core"
    later = timezone.now() + timedelta(seconds=61)
    with mock.patch("django.utils.timezone.now", return_value=later):
        assert services.gpu_status(0)["owner"] == "gaia-study"
