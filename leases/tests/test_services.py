from datetime import timedelta

import pytest
from django.utils import timezone

from gaiaorch.errors import Conflict, InvalidRequest, NotFound
from leases import services
from leases.models import Gpu, Lease, LeaseStatus
from notifications.models import Event

pytestmark = pytest.mark.django_db


def acquire(requester, **kwargs):
    kwargs.setdefault("reason", f"{requester} work")
    return services.acquire(requester=requester, actor=requester, **kwargs)


def event_types():
    """The lease events (a GPU's first sync also writes gpu.appeared)."""
    return list(Event.objects.filter(type__startswith="lease.").order_by("id").values_list("type", flat=True))


def test_it_grants_a_free_gpu_with_the_first_fencing_token():
    result = acquire("gaia-core")
    assert result.granted and result.created
    assert result.lease.status == LeaseStatus.ACTIVE
    assert result.lease.fencing_token == 1
    assert result.queue_position is None
    assert event_types() == ["lease.requested", "lease.granted"]


def test_it_queues_a_second_requester_with_a_position_and_reason():
    acquire("gaia-core", reason="prime inference")
    result = acquire("gaia-study")
    assert not result.granted
    assert result.queue_position == 1
    assert result.waiting_for == "GPU 0 is held by gaia-core"


def test_it_never_lets_a_newcomer_beat_waiters():
    holder = acquire("gaia-core").lease
    acquire("gaia-study")
    acquire("gaia-core-candidate")
    services.release(holder.id, actor="gaia-core")
    assert services.current_holder(0).requester == "gaia-study"
    late = acquire("gaia-study-candidate")
    assert late.queue_position == 2


def test_it_grants_higher_priority_first_then_arrival():
    holder = acquire("gaia-core").lease
    acquire("gaia-study")
    acquire("gaia-core-candidate", priority=5)
    services.release(holder.id, actor="gaia-core")
    assert services.current_holder(0).requester == "gaia-core-candidate"


def test_it_returns_the_existing_lease_on_reacquire():
    first = acquire("gaia-core").lease
    again = acquire("gaia-core")
    assert again.lease.id == first.id and again.granted and not again.created
    waiting = acquire("gaia-study").lease
    assert acquire("gaia-study").lease.id == waiting.id
    assert Lease.objects.count() == 2


def test_it_increases_fencing_tokens_and_never_reuses_them():
    tokens = []
    for _ in range(3):
        lease = acquire("gaia-core").lease
        tokens.append(lease.fencing_token)
        services.release(lease.id, actor="gaia-core")
    Lease.objects.all().delete()
    tokens.append(acquire("gaia-study").lease.fencing_token)
    assert tokens == [1, 2, 3, 4]


def test_it_refuses_an_unknown_requester_and_gpu():
    with pytest.raises(InvalidRequest) as unknown:
        acquire("mallory")
    assert "requester" in unknown.value.context["fields"]
    with pytest.raises(InvalidRequest) as gpu:
        acquire("gaia-core", gpu=7)
    assert "gpu" in gpu.value.context["fields"]


def test_it_answers_404_and_409_for_unknown_and_ended_leases():
    lease = acquire("gaia-core").lease
    services.release(lease.id, actor="gaia-core")
    with pytest.raises(Conflict) as ended:
        services.release(lease.id, actor="gaia-core")
    assert ended.value.context["status"] == "released"
    with pytest.raises(NotFound):
        services.release("00000000-0000-0000-0000-000000000000", actor="gaia-core")
    with pytest.raises(InvalidRequest):
        services.release("not-a-uuid", actor="gaia-core")


def test_it_expires_an_unrenewed_lease_and_grants_the_next_waiter():
    holder = acquire("gaia-core", ttl_seconds=30).lease
    waiter = acquire("gaia-study").lease
    Lease.objects.filter(pk=holder.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    services.reap()
    holder.refresh_from_db()
    waiter.refresh_from_db()
    assert holder.status == LeaseStatus.EXPIRED
    assert waiter.status == LeaseStatus.ACTIVE and waiter.fencing_token == 2
    assert "lease.expired" in event_types()


def test_it_releases_without_an_id_a_requesters_own_lease_or_the_operators_holder():
    acquire("gaia-core")
    waiting = acquire("gaia-study").lease
    released = services.release_without_id(gpu=None, requester="gaia-core", actor="gaia-core")
    assert released.status == LeaseStatus.RELEASED
    assert services.current_holder(0).id == waiting.id
    by_operator = services.release_without_id(gpu=0, requester=None, actor="olivia")
    assert by_operator.requester == "gaia-study" and by_operator.ended_by == "olivia"
    assert "olivia released the holder of GPU 0" in by_operator.end_reason


def test_it_keeps_the_expiry_it_found_when_a_release_without_an_id_finds_nothing():
    holder = acquire("gaia-core", ttl_seconds=30).lease
    Lease.objects.filter(pk=holder.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(Conflict) as refusal:
        services.release_without_id(gpu=None, requester="gaia-core", actor="gaia-core")
    assert refusal.value.code == "nothing_held" and refusal.value.context["gpu"] == 0
    assert Lease.objects.get(pk=holder.pk).status == LeaseStatus.EXPIRED
    assert "lease.released" not in event_types()


def test_it_expires_lazily_on_reads_without_the_reaper():
    holder = acquire("gaia-core", ttl_seconds=30).lease
    Lease.objects.filter(pk=holder.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert services.current_holder(0) is None


def test_it_renews_on_heartbeat_and_refuses_a_heartbeat_after_expiry():
    lease = acquire("gaia-core", ttl_seconds=30).lease
    before = lease.expires_at
    renewed = services.heartbeat(lease.id, actor="gaia-core")
    assert renewed.expires_at >= before
    Lease.objects.filter(pk=lease.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(Conflict):
        services.heartbeat(lease.id, actor="gaia-core")
    lease.refresh_from_db()
    assert lease.status == LeaseStatus.EXPIRED


def test_it_revokes_with_a_reason_and_grants_the_next_waiter(operator):
    holder = acquire("gaia-core").lease
    acquire("gaia-study")
    with pytest.raises(InvalidRequest):
        services.revoke(holder.id, actor="olivia", reason=" ")
    revoked = services.revoke(holder.id, actor="olivia", reason="stuck")
    assert revoked.status == LeaseStatus.REVOKED and revoked.ended_by == "olivia"
    assert services.current_holder(0).requester == "gaia-study"


def test_it_cancels_only_waiting_entries():
    holder = acquire("gaia-core").lease
    waiter = acquire("gaia-study").lease
    with pytest.raises(Conflict):
        services.cancel(holder.id, actor="gaia-core")
    assert services.cancel(waiter.id, actor="gaia-study").status == LeaseStatus.CANCELLED
    assert services.gpu_status(0)["queue"] == []


def test_it_waits_for_measured_memory_before_granting(fake_gpus):
    fake_gpus.set(24576 - 4096, 512)
    result = acquire("gaia-study", memory_mib=16384)
    assert not result.granted
    assert result.waiting_for.startswith("16384 MiB free needed, 4096 MiB free on GPU 0: 20.0 GiB in use by")
    assert "processes outside any lease" in result.waiting_for
    fake_gpus.set(512, 512)
    services.reap()
    assert services.current_holder(0).requester == "gaia-study"


def test_it_grants_without_telemetry_when_memory_cannot_be_measured():
    assert acquire("gaia-study", memory_mib=16384).granted


def test_it_transfers_atomically_with_a_new_token():
    holder = acquire("gaia-core").lease
    acquire("gaia-study")
    new = services.transfer(gpu=0, to_requester="gaia-study", reason="training", actor="handoff")
    holder.refresh_from_db()
    assert holder.status == LeaseStatus.RELEASED
    assert new.status == LeaseStatus.ACTIVE and new.fencing_token == 2
    assert Lease.objects.live().filter(requester="gaia-study").count() == 1


def test_it_refuses_a_transfer_from_the_wrong_holder():
    acquire("gaia-core")
    with pytest.raises(Conflict) as refused:
        services.transfer(
            gpu=0, to_requester="gaia-study", reason="x", actor="handoff", expected_holder="gaia-study"
        )
    assert refused.value.context["holder"] == "gaia-core"
    assert services.current_holder(0).requester == "gaia-core"


def test_it_syncs_gpus_from_telemetry_and_keeps_them_when_it_fails(fake_gpus, settings):
    status = services.gpu_status()
    assert [g["gpu"] for g in status["gpus"]] == [0, 1]
    assert status["memory"]["free_mb"] == 24064
    settings.FAKE_GPU_FILE = "/nonexistent/gpus.json"
    status = services.gpu_status()
    assert not status["telemetry_available"]
    assert [g["gpu"] for g in status["gpus"]] == [0, 1]
    assert Gpu.objects.filter(present=True).count() == 2


def test_it_expires_a_waiter_that_shows_no_sign_of_life():
    acquire("gaia-core")
    waiter = acquire("gaia-study", ttl_seconds=10).lease
    Lease.objects.filter(pk=waiter.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    services.reap()
    waiter.refresh_from_db()
    assert waiter.status == LeaseStatus.EXPIRED


def test_it_keeps_a_polling_waiter_alive_at_half_life():
    acquire("gaia-core")
    waiter = acquire("gaia-study", ttl_seconds=10).lease
    soon = timezone.now() + timedelta(seconds=2)
    Lease.objects.filter(pk=waiter.pk).update(expires_at=soon)
    result = services.check(waiter.id, renew=True)
    assert result.queue_position == 1
    assert result.lease.expires_at > soon + timedelta(seconds=5)
    ended = services.cancel(waiter.id, actor="gaia-study")
    assert services.check(ended.id, renew=True).lease.status == LeaseStatus.CANCELLED
