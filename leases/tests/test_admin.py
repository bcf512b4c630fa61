import pytest

from leases import services
from leases.models import Lease, LeaseStatus
from notifications.models import Event

pytestmark = pytest.mark.django_db


@pytest.fixture
def console(client, django_user_model):
    """Olivia logged in to the admin as a superuser operator."""
    olivia = django_user_model.objects.create_superuser("olivia", password="not-a-real-password")
    client.force_login(olivia)
    return client


def acquire(requester, **kwargs):
    return services.acquire(requester=requester, reason=f"{requester} work", actor=requester, **kwargs).lease


def test_it_shows_memory_holder_token_and_queue_on_the_dashboard(console, fake_gpus):
    fake_gpus.set(9318, 512)
    acquire("gaia-core")
    acquire("gaia-study", memory_mib=2048)
    page = console.get("/admin/leases/gpu/").content.decode()
    assert "GPU dashboard" in page
    assert 'style="width: 38%"' in page
    assert "Held by <strong>gaia-core</strong>" in page and "fencing token <strong>1</strong>" in page
    assert "<td>gaia-study</td>" in page and "GPU 0 is held by gaia-core" in page


def test_it_asks_for_a_reason_before_revoking(console):
    held = acquire("gaia-core")
    acquire("gaia-study")
    action = {"action": "revoke_leases", "_selected_action": [str(held.id)]}
    form = console.post("/admin/leases/lease/", action)
    assert form.status_code == 200 and 'name="reason"' in form.content.decode()
    assert Lease.objects.get(pk=held.pk).status == LeaseStatus.ACTIVE
    done = console.post(
        "/admin/leases/lease/", {**action, "apply": "1", "reason": "wedged driver"}, follow=True
    )
    assert "Revoked 1 lease(s)" in done.content.decode()
    held.refresh_from_db()
    assert held.status == LeaseStatus.REVOKED and held.end_reason == "wedged driver"
    assert Event.objects.filter(type="lease.revoked", actor="olivia").exists()
    assert services.current_holder(0).requester == "gaia-study"


def test_it_cancels_only_waiters_from_the_admin(console):
    held = acquire("gaia-core")
    waiting = acquire("gaia-study")
    selected = [str(held.id), str(waiting.id)]
    body = {"action": "cancel_leases", "_selected_action": selected, "apply": "1", "reason": "not today"}
    done = console.post("/admin/leases/lease/", body, follow=True)
    page = done.content.decode()
    assert "Cancelled 1 lease(s); skipped 1" in page
    assert Lease.objects.get(pk=waiting.pk).status == LeaseStatus.CANCELLED
    assert Lease.objects.get(pk=held.pk).status == LeaseStatus.ACTIVE


def test_it_lists_leases_with_filters_and_read_only_detail(console):
    held = acquire("gaia-core")
    assert "gaia-core" in console.get("/admin/leases/lease/?status__exact=active").content.decode()
    detail = console.get(f"/admin/leases/lease/{held.id}/change/")
    assert (
        detail.status_code == 200 and 'type="submit"' not in detail.content.decode().split("submit-row")[-1]
    )
