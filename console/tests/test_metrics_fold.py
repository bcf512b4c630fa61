"""The figures of /metrics over the history are folded once (console.models.MetricsFold) and
stay exactly what a recount of every row gives: after new events, leases and handoff phases, when
the fold is gone, and when two scrapes fold at once."""

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
from gaiaorch.jobs import StepOutcome
from handoffs import services as handoffs
from handoffs.models import Handoff, HandoffPhase, Phase
from leases import services as leases
from leases.models import Gpu, Lease
from notifications.models import Event

FOLDED = {
    "gaiaorch_leases",
    "gaiaorch_lease_queue_length",
    "gaiaorch_lease_queue_wait_seconds",
    "gaiaorch_events_total",
    "gaiaorch_handoff_phase_duration_seconds",
    "gaiaorch_vram_reclaim_seconds",
    "gaiaorch_handoff_refused_releases_total",
}


def _observe(tallies: dict, labels: tuple, within: list[bool], microseconds: int) -> None:
    """Count one observation into the histogram row of its labels."""
    empty = {"buckets": [0] * len(within), "observations": 0, "total_us": 0}
    tally = tallies.setdefault(labels, empty)
    tally["buckets"] = [count + inside for count, inside in zip(tally["buckets"], within, strict=True)]
    tally["observations"] += 1
    tally["total_us"] += microseconds


def _phase_figures():
    """The handoff phase figures of every record, computed in Python: durations, verified
    reclaims (their labels as the JSON has them) and refused releases, each sum in microseconds."""
    durations: dict = {}
    reclaims: dict = {}
    refused: dict[str, int] = {}
    for record in HandoffPhase.objects.all():
        figures = record.figures
        if record.finished_at is not None:
            lasted = record.finished_at - record.started_at
            within = [lasted <= timedelta(seconds=bound) for bound in metrics.PHASE_BUCKETS]
            _observe(durations, (record.name, record.outcome), within, lasted // timedelta(microseconds=1))
        if record.name != Phase.WAITING_CUDA_CLEANUP:
            continue
        reclaim = figures.get("reclaim") or {}
        if record.outcome == StepOutcome.SUCCEEDED and reclaim.get("seconds") is not None:
            seconds = float(reclaim["seconds"])
            labels = tuple(str(reclaim.get(key)) for key in ("service", "step", "action"))
            within = [seconds <= bound for bound in metrics.RECLAIM_BUCKETS]
            _observe(reclaims, (*labels, str(figures.get("rule"))), within, round(seconds * 1_000_000))
        if record.outcome == StepOutcome.FAILED and figures.get("refusal") is not None:
            refused[str(figures["refusal"])] = refused.get(str(figures["refusal"]), 0) + 1
    return sorted(durations.items()), sorted(reclaims.items()), sorted(refused.items())


class Recount(Collector):
    """The figures as /metrics computed them before the fold: every row, at every scrape, with
    Django's own duration arithmetic (the phase figures in Python)."""

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
        granted = Lease.objects.filter(granted_at__isnull=False).annotate(observed=waited)
        as_duration = lambda bound: timedelta(seconds=bound)  # noqa: E731
        rows = granted.aggregate(**metrics._bucket_aggregates(metrics.QUEUE_WAIT_BUCKETS, as_duration))
        yield metrics.histogram(
            "gaiaorch_lease_queue_wait_seconds",
            "Time from request to grant of every granted lease.",
            [((), metrics._tally(rows, metrics.QUEUE_WAIT_BUCKETS))],
            metrics.QUEUE_WAIT_BUCKETS,
        )
        durations, reclaims, refused = _phase_figures()
        yield metrics.histogram(
            "gaiaorch_handoff_phase_duration_seconds",
            "Duration of every finished handoff phase, by phase and outcome.",
            durations,
            metrics.PHASE_BUCKETS,
            labels=["name", "outcome"],
        )
        yield metrics.histogram(
            "gaiaorch_vram_reclaim_seconds",
            "From the answer of the release step after which a release was verified to its settled "
            "verification, by service, ladder step, its action and the rule that passed.",
            reclaims,
            metrics.RECLAIM_BUCKETS,
            labels=["service", "step", "action", "rule"],
        )
        failures = CounterMetricFamily(
            "gaiaorch_handoff_refused_releases",
            "Releases whose memory was never verified, by the last reason (source_holds_memory, "
            "not_enough_free, not_settled, unverifiable, telemetry_unavailable).",
            labels=["reason"],
        )
        for reason, count in refused:
            failures.add_metric([reason], count)
        yield failures
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


STARTED = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def _handoff(phase: str, gpu: int = 0) -> Handoff:
    ended = phase in (Phase.COMPLETED, Phase.FAILED, Phase.CANCELLED)
    return Handoff.objects.create(
        type="prime_to_study",
        gpu_index=gpu,
        source="gaia-core",
        destination="gaia-study",
        requested_by="olivia",
        phase=phase,
        completed_at=STARTED if ended else None,
    )


def _record(handoff: Handoff, name: str, lasted: float | None, **figures) -> HandoffPhase:
    """A phase record that lasted `lasted` seconds (None: still running); a refusal fails it."""
    outcome = StepOutcome.FAILED if "refusal" in figures else StepOutcome.SUCCEEDED
    return HandoffPhase.objects.create(
        handoff=handoff,
        name=name,
        started_at=STARTED,
        finished_at=None if lasted is None else STARTED + timedelta(seconds=lasted),
        outcome=StepOutcome.RUNNING if lasted is None else outcome,
        figures=figures,
    )


def _verified(seconds: float, step: int = 2) -> dict:
    return {
        "rule": "released",
        "reclaim": {"service": "gaia-prime", "step": step, "action": "vllm", "seconds": seconds},
    }


def _completed(gpu: int = 0, reclaim: float = 0.25) -> HandoffPhase:
    """A handoff that ended, with its records (a refused release, retried and verified); its last record."""
    handoff = _handoff(Phase.COMPLETED, gpu)
    _record(handoff, Phase.INITIATED, 0)
    _record(handoff, Phase.RELEASING_GPU, 1.5)
    _record(handoff, Phase.WAITING_CUDA_CLEANUP, 8.000001, refusal="source_holds_memory")
    _record(handoff, Phase.WAITING_CUDA_CLEANUP, 2, **_verified(reclaim))
    return _record(handoff, Phase.COMPLETED, 0)


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


def test_it_folds_the_finished_phases_and_stays_exact_while_a_handoff_runs(db):
    last = _completed(reclaim=0.1)
    first = _assert_exact()
    assert _fold().figures["phases"]["below"] == last.id + 1  # every record is final

    running = _handoff(Phase.WAITING_CUDA_CLEANUP, gpu=1)
    oldest = _record(running, Phase.INITIATED, 0)
    _record(running, Phase.RELEASING_GPU, 0.5)
    polling = _record(running, Phase.WAITING_CUDA_CLEANUP, None)  # its worker waits for the memory
    _completed(reclaim=0.2)  # on another GPU meanwhile
    assert _assert_exact() != first
    assert _fold().figures["phases"]["below"] == oldest.id  # nothing of a running handoff, nor after it

    HandoffPhase.objects.filter(pk=polling.pk).update(
        finished_at=STARTED + timedelta(seconds=0.3), outcome=StepOutcome.SUCCEEDED, figures=_verified(0.3)
    )
    _assert_exact()
    assert _fold().figures["phases"]["below"] == oldest.id  # finished, but its handoff is still active
    Handoff.objects.filter(pk=running.pk).update(phase=Phase.COMPLETED, completed_at=STARTED)
    last = _record(running, Phase.COMPLETED, 0)
    scraped = _assert_exact()
    assert _fold().figures["phases"]["below"] == last.id + 1
    # Sums in microseconds: 0.1 + 0.2 + 0.3 folded in three scrapes is 0.6, as a recount says.
    assert (
        'gaiaorch_vram_reclaim_seconds_sum{action="vllm",rule="released",service="gaia-prime",step="2"} 0.6'
        in scraped
    )
    assert _assert_exact() == scraped

    # A record left running however its handoff ended stays counted until it finishes.
    left = _record(_handoff(Phase.FAILED), Phase.ROLLING_BACK, None)
    _assert_exact()
    assert _fold().figures["phases"]["below"] == left.id
    HandoffPhase.objects.filter(pk=left.pk).update(finished_at=STARTED, outcome=StepOutcome.FAILED)
    _assert_exact()
    assert _fold().figures["phases"]["below"] == left.id + 1


def test_it_stays_exact_as_real_handoffs_run(gaia, hold_gpu, run_handoff, db):
    hold_gpu("gaia-core")
    there = run_handoff("prime_to_study")
    assert there.phase == Phase.COMPLETED, there.error
    assert "gaiaorch_vram_reclaim_seconds_count{" in _assert_exact()
    assert _fold().figures["phases"]["below"] == HandoffPhase.objects.latest("id").id + 1
    back = run_handoff("study_to_prime")
    assert back.phase == Phase.COMPLETED, back.error
    _assert_exact()
    assert _fold().figures["phases"]["below"] == HandoffPhase.objects.latest("id").id + 1


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

    _completed()
    _assert_exact()
    seen = _fold().figures["events"]["seen"]

    MetricsFold.objects.all().delete()  # a restored or flushed database
    _assert_exact()
    assert _fold().figures["events"]["seen"] == seen

    # A fold written before the phases were folded: they are folded once, from the first record.
    figures = _fold().figures
    del figures["phases"]
    MetricsFold.objects.filter(pk=1).update(figures=figures)
    _completed()
    _assert_exact()
    assert _fold().figures["phases"]["below"] == HandoffPhase.objects.latest("id").id + 1


def test_it_adds_nothing_twice_when_two_scrapes_fold_at_once(two_gpus, db, monkeypatch):
    for number in range(3):
        lease = _served("gaia-study", 0, number + 0.25)
        leases.release(lease.id, actor="gaia-study")
        _completed(reclaim=number + 0.1)
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
        _completed(reclaim=number + 0.1)
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


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_it_folds_past_no_handoff_still_starting_on_postgresql(gaia, hold_gpu, monkeypatch):
    """A new handoff's first record takes its id before it commits; a record of another GPU's
    handoff committed meanwhile has a later id. The scrape waits for the start to commit instead
    of folding past its first record, which would then never be counted."""
    assert connection.vendor == "postgresql"
    hold_gpu("gaia-core")
    written, may_commit = threading.Event(), threading.Event()
    create = HandoffPhase.objects.create

    def create_then_wait(**fields):
        record = create(**fields)
        if threading.current_thread().name == "starter":
            written.set()
            may_commit.wait(30)
        return record

    monkeypatch.setattr(HandoffPhase.objects, "create", create_then_wait)
    errors: list[BaseException] = []

    def run(work) -> None:
        try:
            work()
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    starter = threading.Thread(
        target=run, args=(lambda: handoffs.start(type="prime_to_study", actor="olivia"),), name="starter"
    )
    starter.start()
    try:
        assert written.wait(30)
        later = _completed(gpu=1)
        scraper = threading.Thread(target=run, args=(metrics.exposition,))
        scraper.start()
        scraper.join(0.5)
        assert scraper.is_alive()  # it waits for the start in flight
    finally:
        may_commit.set()
        starter.join(30)
    scraper.join(30)
    assert errors == []
    first = HandoffPhase.objects.get(handoff__gpu_index=0)
    assert first.id < later.id
    assert _fold().figures["phases"]["below"] <= first.id
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
