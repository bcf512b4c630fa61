from datetime import timedelta

import pytest
from django.utils import timezone

from gaiaorch import config, jobs, ticker
from handoffs import measure, services, tasks
from handoffs.models import Handoff, HandoffPhase, Phase
from handoffs.tests.conftest import IDLE_MIB
from leases import holdings
from notifications.models import Event


@pytest.mark.django_db
def test_it_rolls_back_to_cancelled_when_cancelled_during_cleanup(gaia, hold_gpu, monkeypatch):
    core_lease = hold_gpu("gaia-core")
    gaia["gaia-prime"].hooks.clear()  # VRAM stays up, so the runner sits in waiting_cuda_cleanup
    handoff = services.start(type="prime_to_study", actor="olivia")
    samples = []

    def measure_then_cancel(gpu, attribute):
        # Olivia cancels between two samples of the cleanup loop, as the API would (the first
        # sample is the releasing phase's "before").
        samples.append(gpu)
        if len(samples) == 3:
            services.cancel(handoff.id, actor="olivia")
        return real_measure(gpu, attribute)

    real_measure = measure.measure
    monkeypatch.setattr(measure, "measure", measure_then_cancel)
    tasks.run_handoff(str(handoff.id))
    handoff.refresh_from_db()
    assert handoff.phase == Phase.CANCELLED
    assert handoff.error["code"] == "cancelled"
    assert "olivia" in handoff.error["detail"]
    cleanup = handoff.phases.get(name="waiting_cuda_cleanup")
    assert (cleanup.outcome, cleanup.detail) == ("failed", "cancel requested")
    assert holdings.current_holder(0).lease_id == core_lease.id
    assert gaia["gaia-core"].called("/gpu/reclaim")
    assert Event.objects.filter(type="handoff.cancelled", subject_id=str(handoff.id)).exists()


def interrupt(handoff, phase):
    """Leave the handoff as a SIGKILLed worker would: phase written, record running, heartbeat old."""
    Handoff.objects.filter(pk=handoff.pk).update(
        phase=phase,
        claimed_by="dead-host:4242",
        heartbeat_at=timezone.now() - timedelta(minutes=5),
        enqueued_at=timezone.now() - timedelta(minutes=5),
    )
    HandoffPhase.objects.create(handoff=handoff, name=phase)


@pytest.mark.django_db
def test_it_resumes_a_handoff_whose_worker_died_in_cleanup(
    gaia, gpu, hold_gpu, synchronous_worker, django_capture_on_commit_callbacks
):
    hold_gpu("gaia-core")
    handoff = services.start(type="prime_to_study", actor="olivia")
    gpu.set(IDLE_MIB)  # the dead worker's release did free the memory
    interrupt(handoff, Phase.WAITING_CUDA_CLEANUP)
    with django_capture_on_commit_callbacks(execute=True):
        assert services.recover() == [handoff.pk]
    handoff.refresh_from_db()
    assert handoff.phase == Phase.COMPLETED
    records = [(r.name, r.outcome) for r in handoff.phases.order_by("started_at", "id")]
    assert ("waiting_cuda_cleanup", "failed") in records
    assert records[-3:] == [
        ("transferring_ownership", "succeeded"),
        ("signaling_recipient", "succeeded"),
        ("completed", "succeeded"),
    ]
    assert Event.objects.filter(type="handoff.recovering", subject_id=str(handoff.id)).exists()


@pytest.mark.django_db
def test_it_adopts_a_transfer_the_dead_worker_finished(gaia, gpu, hold_gpu, run_handoff):
    hold_gpu("gaia-core")
    handoff = services.start(type="prime_to_study", actor="olivia")
    gpu.set(IDLE_MIB)
    holdings.transfer(gpu=0, to="gaia-study", expected_holder="gaia-core", reason="dead worker", actor="t")
    interrupt(handoff, Phase.TRANSFERRING_OWNERSHIP)
    tasks.run_handoff(str(handoff.id))
    handoff.refresh_from_db()
    assert handoff.phase == Phase.COMPLETED
    assert handoff.phases.filter(name="transferring_ownership").last().figures["adopted"] is True


@pytest.mark.django_db
def test_it_leaves_a_handoff_alone_while_its_worker_beats(gaia, hold_gpu):
    hold_gpu("gaia-core")
    handoff = services.start(type="prime_to_study", actor="olivia")
    Handoff.objects.filter(pk=handoff.pk).update(claimed_by="alive:1", heartbeat_at=timezone.now())
    assert services.recover() == []
    tasks.run_handoff(str(handoff.id))  # a second worker may not claim it either
    assert Handoff.objects.get(pk=handoff.pk).phase == Phase.INITIATED


@pytest.mark.django_db
def test_it_stops_a_worker_that_lost_its_claim(gaia, hold_gpu, monkeypatch):
    hold_gpu("gaia-core")
    handoff = services.start(type="prime_to_study", actor="olivia")

    def taken_over(*args, **kwargs):
        Handoff.objects.filter(pk=handoff.pk).update(claimed_by="other:2", heartbeat_at=timezone.now())
        return {}

    monkeypatch.setattr("handoffs.strategies.run_step", taken_over)
    tasks.run_handoff(str(handoff.id))
    handoff.refresh_from_db()
    assert handoff.claimed_by == "other:2"
    assert handoff.phase == Phase.RELEASING_GPU  # the new owner decides what happens next
    assert not jobs.beat(Handoff, handoff.pk)


@pytest.mark.django_db
def test_it_recovers_handoffs_from_the_ticker_on_the_configured_cadence(
    gaia, gpu, hold_gpu, synchronous_worker, django_capture_on_commit_callbacks
):
    recovery = ticker.PERIODIC["handoffs.handoff.recover"]
    hold_gpu("gaia-core")
    handoff = services.start(type="prime_to_study", actor="olivia")
    gpu.set(IDLE_MIB)
    interrupt(handoff, Phase.RELEASING_GPU)

    with django_capture_on_commit_callbacks(execute=True):
        recovery.func()

    assert recovery.seconds() == config.current().handoffs.recovery_interval_seconds
    handoff.refresh_from_db()
    assert handoff.phase == Phase.COMPLETED
    assert handoff.phases.get(name="releasing_gpu", outcome="failed").detail.startswith("interrupted")
