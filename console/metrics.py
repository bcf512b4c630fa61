"""GET /metrics: Prometheus figures computed from the database at scrape time.

Every figure is a query over rows that all processes share, or a sample of the GPUs they share,
so any web process answers for the whole deployment (no per-process counters to aggregate).
Histograms are built from stored rows: queue wait from leases (requested_at → granted_at), phase
durations from handoff phase records (started_at → finished_at), VRAM reclaim time from the
cleanup phase's `reclaim` figures (the answer of the release step after which the release was
verified → the settled verification). GPU memory figures are NVML's (or the fake file's) now.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

from django.db.models import Count, DurationField, ExpressionWrapper, F, FloatField, Q, QuerySet, Sum
from django.db.models.fields.json import KT
from django.db.models.functions import Cast
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

QUEUE_WAIT_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)
PHASE_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600)
RECLAIM_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120)


def duration(start: str, end: str) -> ExpressionWrapper:
    return ExpressionWrapper(F(end) - F(start), output_field=DurationField())


def _seconds(value: Any) -> float:
    if value is None:
        return 0.0
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _bucket_aggregates(bounds: Sequence[float], as_bound) -> dict[str, Any]:
    """One aggregate per bucket (`value <= bound`), plus count and sum: a histogram in one query."""
    buckets = {
        f"le_{i}": Count("pk", filter=Q(observed__lte=as_bound(bound))) for i, bound in enumerate(bounds)
    }
    return {**buckets, "observations": Count("pk"), "total": Sum("observed")}


def _histogram_rows(
    queryset: QuerySet,
    value: Any,
    bounds: Sequence[float],
    group_by: Sequence[str] = (),
    seconds_are_durations=True,
) -> list[dict[str, Any]]:
    as_bound = (lambda bound: timedelta(seconds=bound)) if seconds_are_durations else float
    observed = queryset.annotate(observed=value).filter(observed__isnull=False)
    aggregates = _bucket_aggregates(bounds, as_bound)
    if group_by:
        return list(observed.values(*group_by).annotate(**aggregates).order_by(*group_by))
    return [observed.aggregate(**aggregates)]


def histogram(
    name: str,
    documentation: str,
    rows: list[dict[str, Any]],
    bounds: Sequence[float],
    labels: Sequence[str] = (),
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=list(labels))
    for row in rows:
        buckets = [(floatToGoString(bound), row[f"le_{i}"]) for i, bound in enumerate(bounds)]
        buckets.append(("+Inf", row["observations"]))
        family.add_metric([str(row[label]) for label in labels], buckets, _seconds(row["total"]))
    return family


def gauge_by(
    name: str, documentation: str, queryset: QuerySet, labels: Sequence[str], family=GaugeMetricFamily
):
    metric = family(name, documentation, labels=list(labels))
    for row in queryset.values(*labels).annotate(count=Count("pk")).order_by(*labels):
        metric.add_metric([str(row[label]) for label in labels], row["count"])
    return metric


# --- the figures ---------------------------------------------------------------------------------


def lease_metrics() -> Iterator[Metric]:
    from leases.models import Gpu, Lease, LeaseStatus

    yield gauge_by(
        "gaiaorch_leases",
        "Leases by GPU and state.",
        Lease.objects.annotate(gpu_index=F("gpu__index")),
        ["gpu_index", "status"],
    )
    queue = GaugeMetricFamily(
        "gaiaorch_lease_queue_length", "Leases waiting for each GPU.", labels=["gpu_index"]
    )
    waiting = Count("leases", filter=Q(leases__status=LeaseStatus.WAITING))
    for gpu in Gpu.objects.annotate(waiting=waiting).order_by("index"):
        queue.add_metric([str(gpu.index)], gpu.waiting)
    yield queue
    granted = Lease.objects.filter(granted_at__isnull=False)
    rows = _histogram_rows(granted, duration("requested_at", "granted_at"), QUEUE_WAIT_BUCKETS)
    yield histogram(
        "gaiaorch_lease_queue_wait_seconds",
        "Time from request to grant of every granted lease.",
        rows,
        QUEUE_WAIT_BUCKETS,
    )


def handoff_metrics() -> Iterator[Metric]:
    from gaiaorch.jobs import StepOutcome
    from handoffs.models import Handoff, HandoffPhase, Phase

    yield gauge_by(
        "gaiaorch_handoffs", "Handoffs by type and phase.", Handoff.objects.all(), ["type", "phase"]
    )
    finished = HandoffPhase.objects.filter(finished_at__isnull=False)
    rows = _histogram_rows(
        finished, duration("started_at", "finished_at"), PHASE_BUCKETS, group_by=["name", "outcome"]
    )
    yield histogram(
        "gaiaorch_handoff_phase_duration_seconds",
        "Duration of every finished handoff phase, by phase and outcome.",
        rows,
        PHASE_BUCKETS,
        labels=["name", "outcome"],
    )
    cleanups = HandoffPhase.objects.filter(name=Phase.WAITING_CUDA_CLEANUP)
    verified = cleanups.filter(outcome=StepOutcome.SUCCEEDED).annotate(
        service=KT("figures__reclaim__service"),
        step=KT("figures__reclaim__step"),
        action=KT("figures__reclaim__action"),
        rule=KT("figures__rule"),
    )
    seconds = Cast(KT("figures__reclaim__seconds"), FloatField())
    labels = ["service", "step", "action", "rule"]
    rows = _histogram_rows(verified, seconds, RECLAIM_BUCKETS, group_by=labels, seconds_are_durations=False)
    yield histogram(
        "gaiaorch_vram_reclaim_seconds",
        "From the answer of the release step after which a release was verified to its settled "
        "verification, by service, ladder step, its action and the rule that passed.",
        rows,
        RECLAIM_BUCKETS,
        labels=labels,
    )
    refused = CounterMetricFamily(
        "gaiaorch_handoff_refused_releases",
        "Releases whose memory was never verified, by the last reason (source_holds_memory, "
        "not_enough_free, not_settled, unverifiable, telemetry_unavailable).",
        labels=["reason"],
    )
    failed = cleanups.filter(outcome=StepOutcome.FAILED).annotate(reason=KT("figures__refusal"))
    for row in (
        failed.filter(reason__isnull=False).values("reason").annotate(count=Count("pk")).order_by("reason")
    ):
        refused.add_metric([row["reason"]], row["count"])
    yield refused


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


def notification_metrics() -> Iterator[Metric]:
    from notifications.models import DeliveryStatus, Event, WebhookDelivery

    yield gauge_by(
        "gaiaorch_events",
        "Events recorded, by type (the log is append-only).",
        Event.objects.all(),
        ["type"],
        family=CounterMetricFamily,
    )
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
        for figures in (
            lease_metrics,
            handoff_metrics,
            gpu_metrics,
            container_metrics,
            notification_metrics,
            worker_metrics,
        ):
            yield from figures()


def exposition() -> bytes:
    """The Prometheus text format of every figure, queried now."""
    return generate_latest(DatabaseCollector())
