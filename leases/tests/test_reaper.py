import time

import pytest

from gaiaorch import ticker
from leases import services
from leases.models import LeaseStatus
from notifications.models import Event

pytestmark = pytest.mark.django_db


def test_it_registers_the_reaper_with_the_ticker():
    assert ticker.PERIODIC["leases.reap"].func is services.reap
    assert ticker.PERIODIC["leases.reap"].interval == 1


def test_it_expires_within_ttl_plus_one_second_and_grants_the_waiter():
    holder = services.acquire(requester="gaia-core", reason="x", ttl_seconds=1, actor="gaia-core").lease
    services.acquire(requester="gaia-study", reason="y", actor="gaia-study")
    granted_at = holder.granted_at.timestamp()
    reap = ticker.PERIODIC["leases.reap"].func  # the job exactly as the ticker process runs it
    while services.current_holder(0).requester == "gaia-core" and time.time() < granted_at + 3:
        reap()
        time.sleep(0.05)
    holder.refresh_from_db()
    assert holder.status == LeaseStatus.EXPIRED
    assert holder.ended_at.timestamp() - granted_at <= 2.0
    assert services.current_holder(0).requester == "gaia-study"
    expired = Event.objects.get(type="lease.expired")
    assert expired.actor == "lease-reaper" and expired.severity == "warning"


def test_it_emits_released_and_granted_events_on_transfer():
    services.acquire(requester="gaia-core", reason="x", actor="gaia-core")
    lease = services.transfer(gpu=0, to_requester="gaia-study", reason="training", actor="handoff")
    granted = Event.objects.filter(type="lease.granted").order_by("-id").first()
    assert granted.subject_id == str(lease.id)
    assert granted.data["transfer"] is True and granted.data["previous_holder"] == "gaia-core"
    assert Event.objects.filter(type="lease.released", actor="handoff").exists()


def test_it_transfers_a_free_gpu_without_an_expected_holder():
    lease = services.transfer(gpu=0, to_requester="gaia-study", reason="training", actor="handoff")
    assert lease.status == LeaseStatus.ACTIVE and lease.fencing_token == 1
