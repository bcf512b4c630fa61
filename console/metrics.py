"""GET /metrics: Prometheus figures computed from the database at scrape time.

Every figure is a query over rows that all processes share, or a sample of the GPUs they share,
so any web process answers for the whole deployment (no per-process counters to aggregate).
Histograms are built from stored rows: queue wait from leases (requested_at → granted_at), phase
durations from handoff phase records (started_at → finished_at), VRAM reclaim time from the
cleanup phase's `reclaim` figures (the answer of the release step after which the release was
verified → the settled verification). GPU memory figures are NVML's (or the fake file's) now.

The figures over the long history are not recounted at every scrape: what can no longer change is
folded once into one row (`console.models.MetricsFold`) that every process reads, and a scrape
counts only the rows above it. Events are append-only and their ids become visible in id order
(notifications.services), so the count per type up to a seen id plus the events above it is
exact. A lease that has ended is final, and each GPU's arrivals are handed out in order under its
row lock, so every lease below a GPU's oldest live one is folded; the rest of that GPU's leases
(the live ones and those after the oldest live one) are counted at each scrape. A finished phase
record is final too, and the records of every handoff appear in id order (phase_limit), so the
records below the oldest one still running, or of a handoff still active, are folded (the phase
durations, the reclaim times, the refused releases). Sums are kept in whole microseconds, so the
folded figures plus the counted ones are exactly a recount of every row.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import (
    BooleanField,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    FloatField,
    Func,
    Max,
    Min,
    Q,
    QuerySet,
    Sum,
)
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Round
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from gaiaorch.jobs import StepOutcome
from gaiaorch.statements import CompiledRead
from handoffs.models import ACTIVE, HandoffPhase, Phase
from notifications.feed import visible_horizons

QUEUE_WAIT_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)
PHASE_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)
RECLAIM_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120)
PHASE_LABELS = ["name", "outcome"]
RECLAIM_LABELS = ["service", "step", "action", "rule"]


class Elapsed(Func):
    """`end - start` of two datetime columns, as a duration. On SQLite SQLite computes it itself,
    in microseconds (Django's own subtraction there calls a Python function for every row)."""

    arg_joiner = " - "
    template = "(%(expressions)s)"
    output_field = DurationField()

    def as_sqlite(self, compiler, connection, **extra_context):
        # Django stores a datetime there as UTC text, 'YYYY-MM-DD HH:MM:SS[.ffffff]': the whole
        # seconds from its first 19 characters (strftime of the whole text rounds to
        # milliseconds: .9996 would be the next second), the fraction's digits padded to six.
        parts, params = [], []
        for expression in self.get_source_expressions():
            sql, sql_params = compiler.compile(expression)
            parts.append(
                f"(CAST(strftime('%%s', substr({sql}, 1, 19)) AS INTEGER) * 1000000"
                f" + CAST(substr({sql} || '000000', 21, 6) AS INTEGER))"
            )
            params += [*sql_params, *sql_params]
        return f"({parts[0]} - {parts[1]})", params


def duration(start: str, end: str) -> Elapsed:
    return Elapsed(F(end), F(start))


# A histogram's figures as they are kept and added up: the count of each bucket, the observations
# and their total in whole microseconds (so that sums are exact, in whatever order they are added).
Tally = dict[str, Any]


def _bucket_aggregates(bounds: Sequence[float], as_bound, total: Any = None) -> dict[str, Any]:
    """One aggregate per bucket (`observed <= bound`), plus count and sum of the rows that have a
    value: a histogram in one query (`total`: another sum, where the observed value is no duration)."""
    buckets = {
        f"le_{i}": Count("pk", filter=Q(observed__lte=as_bound(bound))) for i, bound in enumerate(bounds)
    }
    return {**buckets, "observations": Count("observed"), "total": total or Sum("observed")}


def _tally(row: dict[str, Any], bounds: Sequence[float]) -> Tally:
    """A row of _bucket_aggregates as a Tally: its total a duration, or microseconds summed."""
    total = row["total"]
    total_us = total // timedelta(microseconds=1) if isinstance(total, timedelta) else round(total or 0)
    buckets = [row[f"le_{i}"] for i in range(len(bounds))]
    return {"buckets": buckets, "observations": row["observations"], "total_us": total_us}


def _empty(bounds: Sequence[float]) -> Tally:
    return {"buckets": [0] * len(bounds), "observations": 0, "total_us": 0}


def _copy(tally: Tally) -> Tally:
    return {**tally, "buckets": list(tally["buckets"])}


def _add(into: Tally, tally: Tally) -> None:
    into["buckets"] = [mine + theirs for mine, theirs in zip(into["buckets"], tally["buckets"], strict=True)]
    into["observations"] += tally["observations"]
    into["total_us"] += tally["total_us"]


def histogram(
    name: str,
    documentation: str,
    rows: Iterable[tuple[Sequence[str], Tally]],
    bounds: Sequence[float],
    labels: Sequence[str] = (),
) -> HistogramMetricFamily:
    """A histogram family of (label values, Tally) rows."""
    family = HistogramMetricFamily(name, documentation, labels=list(labels))
    for values, tally in rows:
        buckets = [
            (floatToGoString(bound), count) for bound, count in zip(bounds, tally["buckets"], strict=True)
        ]
        buckets.append(("+Inf", tally["observations"]))
        family.add_metric(list(values), buckets, tally["total_us"] / 1_000_000)
    return family


def gauge_by(
    name: str, documentation: str, queryset: QuerySet, labels: Sequence[str], family=GaugeMetricFamily
):
    metric = family(name, documentation, labels=list(labels))
    for row in queryset.values(*labels).annotate(count=Count("pk")).order_by(*labels):
        metric.add_metric([str(row[label]) for label in labels], row["count"])
    return metric


# --- the figures ---------------------------------------------------------------------------------


class Fold:
    """The folded figures as read from their row, and what this scrape adds to them."""

    def __init__(self, version: int, figures: dict[str, Any]) -> None:
        self.version = version
        events = figures.get("events", {})
        self.events_seen: int = events.get("seen", 0)
        self.events: dict[str, int] = dict(events.get("count", {}))
        leases = figures.get("leases", {})
        self.below: dict[str, int] = dict(leases.get("below", {}))
        self.leases: dict[str, dict[str, int]] = {
            gpu: dict(counts) for gpu, counts in leases.get("count", {}).items()
        }
        self.wait: Tally = _copy(leases.get("wait") or _empty(QUEUE_WAIT_BUCKETS))
        phases = figures.get("phases", {})
        self.phases_below: int = phases.get("below", 0)
        self.durations = _by_labels(phases.get("durations", []))
        self.reclaims = _by_labels(phases.get("reclaims", []))
        self.refused: dict[str, int] = dict(phases.get("refused", {}))
        self.grew = False

    def as_figures(self) -> dict[str, Any]:
        return {
            "events": {"seen": self.events_seen, "count": self.events},
            "leases": {"below": self.below, "count": self.leases, "wait": self.wait},
            "phases": {
                "below": self.phases_below,
                "durations": _labelled(self.durations),
                "reclaims": _labelled(self.reclaims),
                "refused": self.refused,
            },
        }


def _by_labels(rows: list[dict[str, Any]]) -> dict[tuple[str, ...], Tally]:
    return {
        tuple(row["labels"]): {
            "buckets": list(row["buckets"]),
            "observations": row["observations"],
            "total_us": row["total_us"],
        }
        for row in rows
    }


def _labelled(tallies: dict[tuple[str, ...], Tally]) -> list[dict[str, Any]]:
    return [{**tally, "labels": list(labels)} for labels, tally in sorted(tallies.items())]


def read_fold() -> Fold:
    from console.models import MetricsFold

    row = MetricsFold.objects.filter(pk=1).values_list("version", "figures").first()
    if row is None:
        # No lock: the row is only ever created empty at version 0, so whichever scrape's insert
        # wins, this one read the same state; the one that loses inserts nothing.
        MetricsFold.objects.bulk_create([MetricsFold(pk=1)], ignore_conflicts=True)
        return Fold(0, {})
    return Fold(*row)


def store_fold(fold: Fold) -> bool:
    """Write what this scrape folded, unless another scrape stored a fold since this one read it
    (then what this one found stays above the stored fold, counted and folded by a later scrape)."""
    from console.models import MetricsFold

    if not fold.grew:
        return False
    # Written by the scrape itself, in a transaction of its own: the figures stay exact however
    # seldom it runs and need no other process. why conditional: two scrapes may fold at once;
    # only the one that read the current version writes, so nothing is ever added twice.
    with transaction.atomic():
        return bool(
            MetricsFold.objects.filter(pk=1, version=fold.version).update(
                version=fold.version + 1, figures=fold.as_figures()
            )
        )


def lease_rows(fold: Fold) -> tuple[list[tuple[int, int]], list[dict[str, Any]]]:
    """The GPUs (id, index) and, grouped by GPU, state and whether each can be folded, every lease
    above its GPU's fold with its queue-wait histogram: three statements for any number of GPUs.

    A lease can be folded when it arrived before its GPU's oldest live lease, or before the GPU's
    next arrival when none is live. Arrivals are handed out in order under the GPU's row lock in
    the transaction that writes the lease, so every lease below the next arrival read first exists,
    and of those, one below the oldest live arrival read after it has ended: it is final."""
    from leases.models import Gpu, Lease, LeaseStatus

    gpus = list(Gpu.objects.order_by("index").values_list("id", "index", "next_arrival"))
    if not gpus:
        return [], []
    ids = [gpu_id for gpu_id, _, _ in gpus]
    live = Lease.objects.filter(gpu_id__in=ids, status__in=LeaseStatus.live()).values("gpu_id")
    oldest = dict(live.annotate(oldest=Min("arrival")).order_by().values_list("gpu_id", "oldest"))
    above, final = Q(), Q()
    for gpu_id, _, next_arrival in gpus:  # one condition per GPU, on the (gpu, arrival) index
        # Below the next arrival too: every lease there is (the GPU was read first), and SQLite
        # then reads that range of the index, not every lease of the GPU through the queue index.
        since = fold.below.get(str(gpu_id), 0)
        above |= Q(gpu_id=gpu_id, arrival__gte=since, arrival__lt=next_arrival)
        final |= Q(gpu_id=gpu_id, arrival__lt=min(next_arrival, oldest.get(gpu_id, next_arrival)))
    rows = (
        Lease.objects.filter(above)
        .annotate(
            foldable=ExpressionWrapper(final, output_field=BooleanField()),
            observed=duration("requested_at", "granted_at"),
        )
        .values("gpu_id", "status", "foldable")
        .annotate(
            count=Count("pk"),
            last=Max("arrival"),
            **_bucket_aggregates(QUEUE_WAIT_BUCKETS, lambda bound: timedelta(seconds=bound)),
        )
        .order_by()
    )
    return [(gpu_id, index) for gpu_id, index, _ in gpus], list(rows)


def lease_metrics(fold: Fold) -> Iterator[Metric]:
    from leases.models import LeaseStatus

    gpus, rows = lease_rows(fold)
    counts = {gpu: dict(by_status) for gpu, by_status in fold.leases.items()}
    wait = _copy(fold.wait)
    waiting: dict[str, int] = {}
    for row in rows:
        gpu, status = str(row["gpu_id"]), row["status"]
        by_status = counts.setdefault(gpu, {})
        by_status[status] = by_status.get(status, 0) + row["count"]
        if status == LeaseStatus.WAITING:
            waiting[gpu] = waiting.get(gpu, 0) + row["count"]
        tally = _tally(row, QUEUE_WAIT_BUCKETS)
        _add(wait, tally)
        if row["foldable"]:
            folded = fold.leases.setdefault(gpu, {})
            folded[status] = folded.get(status, 0) + row["count"]
            _add(fold.wait, tally)
            fold.below[gpu] = max(fold.below.get(gpu, 0), row["last"] + 1)
            fold.grew = True
    leases = GaugeMetricFamily("gaiaorch_leases", "Leases by GPU and state.", labels=["gpu_index", "status"])
    queue = GaugeMetricFamily(
        "gaiaorch_lease_queue_length", "Leases waiting for each GPU.", labels=["gpu_index"]
    )
    for gpu_id, index in gpus:
        for status, count in sorted(counts.get(str(gpu_id), {}).items()):
            leases.add_metric([str(index), status], count)
        queue.add_metric([str(index)], waiting.get(str(gpu_id), 0))
    yield leases
    yield queue
    yield histogram(
        "gaiaorch_lease_queue_wait_seconds",
        "Time from request to grant of every granted lease.",
        [((), wait)],
        QUEUE_WAIT_BUCKETS,
    )


def phase_limit(fold: Fold, newest: int) -> int:
    """The phase record id below which every record is finished and none can still appear: the
    oldest record above the fold still running or of a handoff still active, else one above
    `newest`, the newest id read once no event writer was in flight (visible_horizons).

    A handoff's records are written one transaction after another: each of its worker's first
    updates the handoff's row, and a new handoff's first record is written under the event log's
    order lock (handoffs.services.start). So a record still in flight has an id above every visible
    record of its handoff if that handoff is visible (and active), or else above `newest`. On
    SQLite, whose writers take turns, every record up to the newest visible one is visible."""
    first = _FIRST_UNSETTLED.first_row(below=fold.phases_below, newest=newest)
    return newest + 1 if first is None else first[0]


def _merged(
    fold: Fold,
    folded: dict[tuple[str, ...], Tally],
    rows: list[dict[str, Any]],
    labels: Sequence[str],
    bounds: Sequence[float],
) -> list[tuple[tuple[str, ...], Tally]]:
    """The folded histogram rows plus the rows above the fold, by their labels as shown; those
    that can be folded now are added to the fold too."""
    shown = {values: _copy(tally) for values, tally in folded.items()}
    for row in rows:
        values = tuple(str(row[label]) for label in labels)
        tally = _tally(row, bounds)
        _add(shown.setdefault(values, _empty(bounds)), tally)
        if row["foldable"]:
            _add(folded.setdefault(values, _empty(bounds)), tally)
            fold.grew = True
    return sorted(shown.items())


def _phases_above(below: int, limit: int) -> QuerySet[HandoffPhase]:
    """The phase records from `below` on, each marked `foldable` when it lies below `limit`."""
    foldable = ExpressionWrapper(Q(id__lt=limit), output_field=BooleanField())
    return HandoffPhase.objects.filter(id__gte=below).annotate(foldable=foldable)


def _durations(below: int, limit: int) -> QuerySet:
    finished = _phases_above(below, limit).filter(finished_at__isnull=False)
    observed = finished.annotate(observed=duration("started_at", "finished_at"))
    aggregates = _bucket_aggregates(PHASE_BUCKETS, lambda bound: timedelta(seconds=bound))
    return observed.values(*PHASE_LABELS, "foldable").annotate(**aggregates).order_by()


def _reclaims(below: int, limit: int) -> QuerySet:
    verified = _phases_above(below, limit).filter(
        name=Phase.WAITING_CUDA_CLEANUP, outcome=StepOutcome.SUCCEEDED
    )
    observed = verified.annotate(
        service=KT("figures__reclaim__service"),
        step=KT("figures__reclaim__step"),
        action=KT("figures__reclaim__action"),
        rule=KT("figures__rule"),
        observed=Cast(KT("figures__reclaim__seconds"), FloatField()),
    ).filter(observed__isnull=False)
    microseconds = Sum(Round(F("observed") * 1_000_000.0))
    aggregates = _bucket_aggregates(RECLAIM_BUCKETS, float, total=microseconds)
    return observed.values(*RECLAIM_LABELS, "foldable").annotate(**aggregates).order_by()


def _refused(below: int, limit: int) -> QuerySet:
    failed = _phases_above(below, limit).filter(name=Phase.WAITING_CUDA_CLEANUP, outcome=StepOutcome.FAILED)
    reasons = failed.annotate(reason=KT("figures__refusal")).filter(reason__isnull=False)
    return reasons.values("reason", "foldable").annotate(count=Count("pk")).order_by()


# The phase figures' statements, built once (gaiaorch.statements): a scrape pays only their execution.
_PHASE_ID = HandoffPhase._meta.get_field("id")
_FIRST_UNSETTLED = CompiledRead(
    lambda below, newest: (
        HandoffPhase.objects.filter(id__gte=below, id__lte=newest)
        .filter(Q(finished_at__isnull=True) | Q(handoff__phase__in=ACTIVE))
        .order_by("id")
        .values_list("id")[:1]
    ),
    below=_PHASE_ID,
    newest=_PHASE_ID,
)
_DURATIONS = CompiledRead(_durations, below=_PHASE_ID, limit=_PHASE_ID)
_RECLAIMS = CompiledRead(_reclaims, below=_PHASE_ID, limit=_PHASE_ID)
_REFUSED = CompiledRead(_refused, below=_PHASE_ID, limit=_PHASE_ID)


def handoff_metrics(fold: Fold, newest_phase: int) -> Iterator[Metric]:
    """Handoffs by phase, and the figures of their phase records: those below the fold's id read
    from the fold, the others counted (bounded by that id), and those that have become final since
    (phase_limit) folded."""
    from handoffs.models import Handoff

    yield gauge_by(
        "gaiaorch_handoffs", "Handoffs by type and phase.", Handoff.objects.all(), ["type", "phase"]
    )
    below, limit = fold.phases_below, phase_limit(fold, newest_phase)
    yield histogram(
        "gaiaorch_handoff_phase_duration_seconds",
        "Duration of every finished handoff phase, by phase and outcome.",
        _merged(
            fold, fold.durations, _DURATIONS.dicts(below=below, limit=limit), PHASE_LABELS, PHASE_BUCKETS
        ),
        PHASE_BUCKETS,
        labels=PHASE_LABELS,
    )
    yield histogram(
        "gaiaorch_vram_reclaim_seconds",
        "From the answer of the release step after which a release was verified to its settled "
        "verification, by service, ladder step, its action and the rule that passed.",
        _merged(
            fold, fold.reclaims, _RECLAIMS.dicts(below=below, limit=limit), RECLAIM_LABELS, RECLAIM_BUCKETS
        ),
        RECLAIM_BUCKETS,
        labels=RECLAIM_LABELS,
    )
    refused = CounterMetricFamily(
        "gaiaorch_handoff_refused_releases",
        "Releases whose memory was never verified, by the last reason (source_holds_memory, "
        "not_enough_free, not_settled, unverifiable, telemetry_unavailable).",
        labels=["reason"],
    )
    counts = dict(fold.refused)
    for row in _REFUSED.dicts(below=below, limit=limit):
        reason = str(row["reason"])
        counts[reason] = counts.get(reason, 0) + row["count"]
        if row["foldable"]:
            fold.refused[reason] = fold.refused.get(reason, 0) + row["count"]
            fold.grew = True
    for reason, count in sorted(counts.items()):
        refused.add_metric([reason], count)
    yield refused
    if limit > below:
        fold.phases_below = limit
        fold.grew = True


def gpu_metrics() -> Iterator[Metric]:
    """GPU memory now, and who holds it (a sample and its attribution, taken at scrape time)."""
    from gaiaorch import attribution, config, telemetry

    sample = telemetry.sample()
    owners = attribution.current(sample)
    memory = GaugeMetricFamily(
        "gaiaorch_gpu_memory_mib",
        "GPU memory now, by kind: total, used, free, and reserved by the driver (NVML v2).",
        labels=["gpu", "kind"],
    )
    by_service = GaugeMetricFamily(
        "gaiaorch_gpu_service_memory_mib",
        "GPU memory held now by the processes attributed to each GPU service.",
        labels=["gpu", "service"],
    )
    unattributed = GaugeMetricFamily(
        "gaiaorch_gpu_unattributed_memory_mib",
        "GPU memory held now by processes outside every configured service.",
        labels=["gpu"],
    )
    attributed = GaugeMetricFamily(
        "gaiaorch_gpu_attribution_available",
        "1 when NVML's process list accounts for the memory in use, so its owners are known.",
        labels=["gpu"],
    )
    try:
        gpu_services = [s.name for s in config.current().services.values() if s.gpu]
    except config.ConfigError:  # the figures that need no configuration are still worth a scrape
        gpu_services = []
    for gpu in sample.gpus:
        index = str(gpu.index)
        figures = {
            "total": gpu.total_mib,
            "used": gpu.used_mib,
            "free": gpu.free_mib,
            "reserved": gpu.reserved_mib,
        }
        for kind, value in figures.items():
            if value is not None:
                memory.add_metric([index, kind], value)
        found = owners.gpu(gpu.index)
        held = found.by_service() if found else {}
        for name in sorted({*gpu_services, *held}):
            by_service.add_metric([index, name], held.get(name, 0))
        unattributed.add_metric([index], found.unattributed_mib if found else 0)
        attributed.add_metric([index], int(bool(found and found.available)))
    yield from (memory, by_service, unattributed, attributed)


def container_metrics() -> Iterator[Metric]:
    from containers.models import Container, DockerStatus, Operation

    yield gauge_by(
        "gaiaorch_containers",
        "Managed containers by stack and observed state.",
        Container.objects.all(),
        ["stack", "state"],
    )
    yield gauge_by(
        "gaiaorch_container_operations",
        "Container operations by kind and status.",
        Operation.objects.all(),
        ["kind", "status"],
    )
    docker = DockerStatus.objects.filter(pk=1).first()
    yield GaugeMetricFamily(
        "gaiaorch_docker_available",
        "1 when Docker answered the last check.",
        value=int(bool(docker and docker.available)),
    )


def event_metrics(fold: Fold, top: int) -> Iterator[Metric]:
    """Events by type: the folded counts plus the events above the last id seen up to `top`, the
    newest below which none can still appear (visible_horizons), all folded."""
    from notifications.models import Event

    counts = fold.events
    if top > fold.events_seen:
        # Both bounds: SQLite then reads the id range rather than every entry of the type index.
        above = Event.objects.filter(id__gt=fold.events_seen, id__lte=top).values("type")
        for row in above.annotate(count=Count("pk")).order_by():
            counts[row["type"]] = counts.get(row["type"], 0) + row["count"]
        fold.events_seen = top
        fold.grew = True
    events = CounterMetricFamily(
        "gaiaorch_events", "Events recorded, by type (the log is append-only).", labels=["type"]
    )
    for type_, count in sorted(counts.items()):
        events.add_metric([type_], count)
    yield events


def notification_metrics() -> Iterator[Metric]:
    from notifications.models import DeliveryStatus, WebhookDelivery

    yield gauge_by(
        "gaiaorch_webhook_deliveries",
        "Webhook deliveries by status.",
        WebhookDelivery.objects.all(),
        ["webhook", "status"],
    )
    failures = CounterMetricFamily(
        "gaiaorch_webhook_failures", "Webhook deliveries given up after every attempt.", labels=["webhook"]
    )
    failed = WebhookDelivery.objects.filter(status=DeliveryStatus.FAILED)
    for row in failed.values("webhook").annotate(count=Count("pk")).order_by("webhook"):
        failures.add_metric([row["webhook"]], row["count"])
    yield failures


def worker_metrics() -> Iterator[Metric]:
    from gaiaorch.services import worker_heartbeat_age

    age = worker_heartbeat_age()
    yield GaugeMetricFamily(
        "gaiaorch_worker_heartbeat_age_seconds",
        "Seconds since a worker last ran the heartbeat task (NaN: never).",
        value=float("nan") if age is None else age,
    )


class DatabaseCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        fold = read_fold()
        # The newest ids below which none can still appear (the phase records: phase_limit).
        events, phases = visible_horizons(HandoffPhase)
        yield from lease_metrics(fold)
        yield from handoff_metrics(fold, phases)
        for figures in (gpu_metrics, container_metrics):
            yield from figures()
        yield from event_metrics(fold, events)
        yield from notification_metrics()
        yield from worker_metrics()
        store_fold(fold)


def exposition() -> bytes:
    """The Prometheus text format of every figure, queried now."""
    return generate_latest(DatabaseCollector())
