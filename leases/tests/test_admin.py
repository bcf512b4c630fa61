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


def ask(console, action: str, *leases) -> object:
    """Choose a list action of the lease admin for the selected leases."""
    body = {"action": action, "_selected_action": [str(lease.id) for lease in leases]}
    return console.post("/admin/leases/lease/", body)


def test_it_asks_for_a_reason_before_revoking(console):
    held = acquire("gaia-core")
    acquire("gaia-study")
    asked = ask(console, "revoke_leases", held)
    assert asked.status_code == 302
    assert asked["Location"] == f"/admin/dashboard/action/revoke-lease?lease_id={held.id}"
    form = console.get(asked["Location"])
    assert form.status_code == 200 and 'name="reason"' in form.content.decode()
    assert Lease.objects.get(pk=held.pk).status == LeaseStatus.ACTIVE
    unreasoned = console.post(asked["Location"], {"lease_id": str(held.id), "reason": " "})
    assert unreasoned.status_code == 200 and unreasoned.context["form"].errors["reason"]
    assert Lease.objects.get(pk=held.pk).status == LeaseStatus.ACTIVE
    done = console.post(asked["Location"], {"lease_id": str(held.id), "reason": "wedged driver"}, follow=True)
    assert f"Revoked lease {held.id} of gaia-core on GPU 0." in done.content.decode()
    held.refresh_from_db()
    assert held.status == LeaseStatus.REVOKED and held.end_reason == "wedged driver"
    assert Event.objects.filter(type="lease.revoked", actor="olivia", message="wedged driver").exists()
    assert services.current_holder(0).requester == "gaia-study"


def test_it_cancels_only_waiters_from_the_admin(console):
    held = acquire("gaia-core")
    waiting = acquire("gaia-study")
    both = ask(console, "cancel_leases", held, waiting)
    assert both.status_code == 302 and both["Location"] == "/admin/leases/lease/"
    assert "Select exactly one lease to cancel." in console.get(both["Location"]).content.decode()
    asked = ask(console, "cancel_leases", held)
    refused = console.post(asked["Location"], {"lease_id": str(held.id), "reason": "not today"}, follow=True)
    assert "refused" in refused.content.decode() and "release it instead" in refused.content.decode()
    asked = ask(console, "cancel_leases", waiting)
    console.post(asked["Location"], {"lease_id": str(waiting.id), "reason": "not today"})
    assert Lease.objects.get(pk=waiting.pk).status == LeaseStatus.CANCELLED
    assert Lease.objects.get(pk=held.pk).status == LeaseStatus.ACTIVE
    assert Event.objects.filter(type="lease.cancelled", actor="olivia", message="not today").exists()


def test_it_lists_leases_with_filters_and_read_only_detail(console):
    held = acquire("gaia-core")
    assert "gaia-core" in console.get("/admin/leases/lease/?status__exact=active").content.decode()
    detail = console.get(f"/admin/leases/lease/{held.id}/change/")
    assert (
        detail.status_code == 200 and 'type="submit"' not in detail.content.decode().split("submit-row")[-1]
    )
