from __future__ import annotations

from datetime import timedelta

from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from containers.models import Container, State
from gaiaorch.jobs import StepOutcome
from handoffs.models import Handoff, HandoffPhase, Phase
from leases import services as leases
from leases.models import Lease
from notifications.models import DeliveryStatus, Event, WebhookDelivery


def _scrape(client) -> dict[str, dict[tuple, float]]:
    """{sample name: {sorted label pairs: value}} of one scrape, parsed as Prometheus would."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def _shift_grant(lease: Lease, waited_seconds: float) -> None:
    Lease.objects.filter(pk=lease.pk).update(
        requested_at=lease.granted_at - timedelta(seconds=waited_seconds)  # type: ignore[operator]
    )


def test_it_counts_leases_by_state_and_the_queue(anonymous_client, fake_gpu, db):
    leases.acquire(requester="gaia-prime", reason="serving", actor="gaia-prime")
    leases.acquire(requester="gaia-study", reason="training", actor="gaia-study")
    samples = _scrape(anonymous_client)
    assert samples["gaiaorch_leases"][(("gpu_index", "0"), ("status", "active"))] == 1
    assert samples["gaiaorch_leases"][(("gpu_index", "0"), ("status", "waiting"))] == 1
    assert samples["gaiaorch_lease_queue_length"][(("gpu_index", "0"),)] == 1


def test_it_builds_the_queue_wait_histogram_from_grants(anonymous_client, fake_gpu, db):
    first = leases.acquire(requester="gaia-prime", reason="serving", actor="gaia-prime").lease
    leases.release(first.id, actor="gaia-prime")
    second = leases.acquire(requester="gaia-study", reason="training", actor="gaia-study").lease
    _shift_grant(first, 0.2)
    _shift_grant(second, 42)
    buckets = _scrape(anonymous_client)["gaiaorch_lease_queue_wait_seconds_bucket"]
    assert buckets[(("le", "0.1"),)] == 0
    assert buckets[(("le", "0.5"),)] == 1
    assert buckets[(("le", "30.0"),)] == 1
    assert buckets[(("le", "60.0"),)] == 2
    assert buckets[(("le", "+Inf"),)] == 2
    wait = _scrape(anonymous_client)
    assert wait["gaiaorch_lease_queue_wait_seconds_count"][()] == 2
    assert abs(wait["gaiaorch_lease_queue_wait_seconds_sum"][()] - 42.2) < 0.01


def _phase(handoff: Handoff, name: str, lasted: float, **figures) -> None:
    started = timezone.now() - timedelta(seconds=60)
    HandoffPhase.objects.create(
        handoff=handoff,
        name=name,
        started_at=started,
        finished_at=started + timedelta(seconds=lasted),
        outcome=StepOutcome.SUCCEEDED,
        figures=figures,
    )


def test_it_builds_phase_and_vram_reclaim_histograms(anonymous_client, db):
    handoff = Handoff.objects.create(
        type="prime_to_study",
        source="gaia-prime",
        destination="gaia-study",
        requested_by="olivia",
        phase=Phase.COMPLETED,
        completed_at=timezone.now(),
    )
    _phase(handoff, Phase.RELEASING_GPU, 1.5)
    reclaim = {"service": "gaia-prime", "step": 2, "action": "vllm", "seconds": 2.75}
    _phase(handoff, Phase.WAITING_CUDA_CLEANUP, 3.0, seconds=0.0, rule="released", reclaim=reclaim)
    _phase(handoff, Phase.WAITING_CUDA_CLEANUP, 8.0, refusal="source_holds_memory")  # a leak: not a reclaim
    HandoffPhase.objects.filter(figures__refusal="source_holds_memory").update(outcome=StepOutcome.FAILED)
    samples = _scrape(anonymous_client)
    phases = samples["gaiaorch_handoff_phase_duration_seconds_count"]
    assert phases[(("name", "releasing_gpu"), ("outcome", "succeeded"))] == 1
    releasing = samples["gaiaorch_handoff_phase_duration_seconds_sum"]
    assert releasing[(("name", "releasing_gpu"), ("outcome", "succeeded"))] == 1.5
    step = (("action", "vllm"), ("rule", "released"), ("service", "gaia-prime"), ("step", "2"))
    buckets = samples["gaiaorch_vram_reclaim_seconds_bucket"]
    assert (
        buckets[(*step[:1], ("le", "2.0"), *step[1:])] == 0
        and buckets[(*step[:1], ("le", "5.0"), *step[1:])] == 1
    )
    assert samples["gaiaorch_vram_reclaim_seconds_sum"] == {step: 2.75}
    assert samples["gaiaorch_handoff_refused_releases_total"] == {(("reason", "source_holds_memory"),): 1}
    assert samples["gaiaorch_handoffs"][(("phase", "completed"), ("type", "prime_to_study"))] == 1


def test_it_reports_gpu_memory_by_kind_and_by_owner(anonymous_client, resident, gpu, db):
    stranger = resident.stranger
    gpu.hold(stranger.pid, 2000)
    samples = _scrape(anonymous_client)
    memory = samples["gaiaorch_gpu_memory_mib"]
    assert memory[(("gpu", "0"), ("kind", "total"))] == 24576
    assert memory[(("gpu", "0"), ("kind", "used"))] == 13000
    assert memory[(("gpu", "0"), ("kind", "reserved"))] == 615
    assert memory[(("gpu", "0"), ("kind", "free"))] == 24576 - 615 - 13000
    services = samples["gaiaorch_gpu_service_memory_mib"]
    assert services[(("gpu", "0"), ("service", "gaia-prime"))] == 11000
    assert services[(("gpu", "0"), ("service", "gaia-study"))] == 0
    assert samples["gaiaorch_gpu_unattributed_memory_mib"] == {(("gpu", "0"),): 2000}
    assert samples["gaiaorch_gpu_attribution_available"] == {(("gpu", "0"),): 1}


def test_it_reports_containers_events_and_webhook_failures(anonymous_client, db):
    Container.objects.create(service="gaia-core", stack="live", state=State.RUNNING)
    Container.objects.create(service="gaia-core-candidate", stack="candidate", state=State.EXITED)
    now = timezone.now()
    event = Event.objects.create(type="lease.granted", title="granted", actor="olivia", created_at=now)
    Event.objects.create(type="lease.granted", title="granted", actor="olivia", created_at=now)
    WebhookDelivery.objects.create(
        event=event, webhook="ops", url="http://127.0.0.1:9/", status=DeliveryStatus.FAILED, created_at=now
    )
    samples = _scrape(anonymous_client)
    assert samples["gaiaorch_containers"][(("stack", "live"), ("state", "running"))] == 1
    assert samples["gaiaorch_containers"][(("stack", "candidate"), ("state", "exited"))] == 1
    assert samples["gaiaorch_events_total"][(("type", "lease.granted"),)] == 2
    assert samples["gaiaorch_webhook_failures_total"][(("webhook", "ops"),)] == 1
    assert samples["gaiaorch_docker_available"][()] == 0


def test_it_needs_a_token_when_reads_are_closed(anonymous_client, operator_client, settings, db):
    settings.OPEN_READS = False
    assert anonymous_client.get("/metrics").status_code == 401
    assert operator_client.get("/metrics").status_code == 200


def test_it_answers_a_refused_scrape_in_the_api_error_shape(anonymous_client, settings, db):
    settings.OPEN_READS = False
    response = anonymous_client.get("/metrics", HTTP_ACCEPT="text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
    assert response.status_code == 401
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"] == "not_authenticated"


def test_it_answers_503_while_the_database_is_down(anonymous_client, db, database_down):
    response = anonymous_client.get("/metrics")
    assert response.status_code == 503
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"] == "database_unavailable"
