"""The figures of /metrics over the history are folded once (console.models.MetricsFold) and
stay exactly what a recount of every row gives: after new events and leases, when the fold is
gone, and when two scrapes fold at once."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.db.models import Count, DurationField, ExpressionWrapper, F, Q
from django.test.utils import CaptureQueriesContext
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from console import metrics
from console.models import MetricsFold
from leases import services as leases
from leases.models import Gpu, Lease
from notifications.models import Event

FOLDED = {
    "gaiaorch_leases",
    "gaiaorch_lease_queue_length",
    "gaiaorch_lease_queue_wait_seconds",
    "gaiaorch_events_total",
}


class Recount(Collector):
    """The figures as /metrics computed them before the fold: every row, at every scrape, with
    Django's own duration arithmetic."""

    def collect(self):
        yield metrics.gauge_by(
            "gaiaorch_leases",
            "Leases by GPU and state.",
            Lease.objects.annotate(gpu_index=F("gpu__index")),
            ["gpu_index", "status"],
        )
        queue = GaugeMetricFamily(
            "gaiaorch_lease_queue_length", "Leases waiting for each GPU.", labels=["gpu_index"]
        )
        waiting = Count("leases", filter=Q(leases__status="waiting"))
        for gpu in Gpu.objects.annotate(waiting=waiting).order_by("index"):
            queue.add_metric([str(gpu.index)], gpu.waiting)
        yield queue
        waited = ExpressionWrapper(F("granted_at") - F("requested_at"), output_field=DurationField())
        granted = Lease.objects.filter(granted_at__isnull=False)
        rows = metrics._histogram_rows(granted, waited, metrics.QUEUE_WAIT_BUCKETS)
        yield metrics.histogram(
            "gaiaorch_lease_queue_wait_seconds",
            "Time from request to grant of every granted lease.",
            rows,
            metrics.QUEUE_WAIT_BUCKETS,
        )
        yield metrics.gauge_by(
            "gaiaorch_events",
            "Events recorded, by type (the log is append-only).",
            Event.objects.all(),
            ["type"],
            family=CounterMetricFamily,
        )


def _families(text: str) -> str:
    """The exposition text of the folded families only, in their order."""
    blocks = text.split("# HELP ")
    return "".join(f"# HELP {block}" for block in blocks if block.split(" ", 1)[0] in FOLDED)


def _assert_exact() -> str:
    scraped = _families(metrics.exposition().decode())
    assert scraped == generate_latest(Recount()).decode()
    return scraped


def _waited(lease: Lease, seconds: float, *, whole: bool = False) -> None:
    """Give a lease a chosen queue wait, granted on a whole second (SQLite then stores no fraction
    at all) or just before one (a fraction that rounds up to the next second in milliseconds)."""
    granted = datetime(2026, 1, 1, 12, 0, 0, 0 if whole else 999_999, tzinfo=UTC)
    requested = granted - timedelta(seconds=seconds)
    Lease.objects.filter(pk=lease.pk).update(granted_at=granted, requested_at=requested)


def _served(requester: str, gpu: int, waited: float, *, whole: bool = False) -> Lease:
    lease = leases.acquire(requester=requester, reason="work", gpu=gpu, actor=requester).lease
    _waited(lease, waited, whole=whole)
    return lease


def _fold() -> MetricsFold:
    return MetricsFold.objects.get(pk=1)


def test_it_folds_the_ended_history_and_stays_exact_as_events_and_leases_arrive(two_gpus, db):
    for number, waited in enumerate([0.1, 0.100001, 0.5, 42.25, 3600.000001, 7200]):
        lease = _served("gaia-study", number % 2, waited, whole=number in (1, 5))
        leases.release(lease.id, actor="gaia-study")
    first = _assert_exact()
    fold = _fold()
    assert fold.version == 1
    assert fold.figures["events"]["seen"] == Event.objects.latest("id").id
    assert sum(fold.figures["leases"]["count"][str(g.id)]["released"] for g in Gpu.objects.all()) == 6

    holder = _served("gaia-prime", 0, 1.5)  # live from now on: everything after it stays counted
    waiter = leases.acquire(requester="gaia-core", reason="next", gpu=0, actor="gaia-core").lease
    quitter = leases.acquire(requester="gaia-study", reason="later", gpu=0, actor="gaia-study").lease
    leases.cancel(quitter.id, actor="gaia-study")
    assert _assert_exact() != first
    below = _fold().figures["leases"]["below"][str(holder.gpu_id)]
    assert below == holder.arrival  # the cancelled one arrived after a live one: not folded yet

    leases.release(holder.id, actor="gaia-prime")  # the waiter is granted: the horizon moves on
    _waited(Lease.objects.get(pk=waiter.pk), 12.5)
    _assert_exact()
    leases.release(waiter.id, actor="gaia-core")
    _assert_exact()
    assert _fold().figures["leases"]["below"][str(holder.gpu_id)] == quitter.arrival + 1  # all ended
    assert _assert_exact() == _assert_exact()


def test_it_starts_each_scrape_from_the_stored_fold_and_rebuilds_a_lost_one(two_gpus, db):
    for number in range(4):
        lease = _served("gaia-study", number % 2, number * 0.3)
        leases.release(lease.id, actor="gaia-study")
    _assert_exact()
    assert _fold().version == 1
    _assert_exact()
    assert _fold().version == 1  # nothing new: nothing written
    seen = _fold().figures["events"]["seen"]
    leases.acquire(requester="gaia-prime", reason="serving", gpu=0, actor="gaia-prime")
    # Nothing of the fold lives in the process: the next scrape reads the row and counts above it.
    with CaptureQueriesContext(connection) as queries:
        _assert_exact()
    assert any(f'"id" > {seen}' in query["sql"] for query in queries.captured_queries)
    assert _fold().version == 2
    seen = _fold().figures["events"]["seen"]

    MetricsFold.objects.all().delete()  # a restored or flushed database
    _assert_exact()
    assert _fold().figures["events"]["seen"] == seen


def test_it_adds_nothing_twice_when_two_scrapes_fold_at_once(two_gpus, db, monkeypatch):
    for number in range(3):
        lease = _served("gaia-study", 0, number + 0.25)
        leases.release(lease.id, actor="gaia-study")
    store = metrics.store_fold
    stored = []

    def racing(fold):
        monkeypatch.setattr(metrics, "store_fold", store)
        metrics.exposition()  # another scrape read the same version, folds and stores first
        stored.append(store(fold))
        return stored[-1]

    monkeypatch.setattr(metrics, "store_fold", racing)
    _assert_exact()
    assert stored == [False]
    assert _fold().version == 1
    _assert_exact()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_it_adds_nothing_twice_when_two_processes_scrape_at_once_on_postgresql(two_gpus, monkeypatch):
    assert connection.vendor == "postgresql"
    for number in range(3):
        lease = _served("gaia-study", number % 2, number + 0.25)
        leases.release(lease.id, actor="gaia-study")
    store = metrics.store_fold
    both_read = threading.Barrier(2, timeout=10)
    stored: list[bool] = []

    def together(fold):
        both_read.wait()  # both scrapes have read the same version and counted the same rows
        stored.append(store(fold))
        return stored[-1]

    monkeypatch.setattr(metrics, "store_fold", together)

    def scrape():
        try:
            metrics.exposition()
        finally:
            connection.close()

    scrapers = [threading.Thread(target=scrape) for _ in range(2)]
    for scraper in scrapers:
        scraper.start()
    for scraper in scrapers:
        scraper.join(timeout=20)
    assert sorted(stored) == [False, True]
    monkeypatch.setattr(metrics, "store_fold", store)
    assert _fold().version == 1
    _assert_exact()


def test_it_scrapes_in_the_same_statements_for_any_number_of_gpus(two_gpus, db):
    for gpu in range(2):
        leases.acquire(requester="gaia-study", reason="work", gpu=gpu, actor="gaia-study")
    metrics.exposition()  # folds what there is: the scrapes below write nothing

    def statements() -> int:
        with CaptureQueriesContext(connection) as queries:
            metrics.exposition()
        return len(queries.captured_queries)

    before = statements()
    Gpu.objects.bulk_create(Gpu(index=index) for index in range(2, 16))
    assert statements() == before
    _assert_exact()
