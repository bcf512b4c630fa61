import pytest
from django.contrib.admin.sites import site
from django.db import IntegrityError, transaction

from notifications.models import AppendOnlyError, Event
from notifications.tests.samples import record_sample


def make_event(**overrides) -> Event:
    fields: dict = {"type": "test.ping", "title": "GPU 0 granted to gaia-study", "actor": "gaia-study"}
    fields.update(overrides)
    return record_sample(fields.pop("type"), fields.pop("title"), **fields)


def test_it_records_an_event_with_all_fields(db):
    event = make_event(data={"gpu": 0}, subject=("lease", "abc"), correlation_id="h-1", severity="warning")
    stored = Event.objects.get(id=event.id)
    assert (stored.type, stored.severity, stored.actor) == ("test.ping", "warning", "gaia-study")
    assert (stored.subject_kind, stored.subject_id, stored.correlation_id) == ("lease", "abc", "h-1")
    assert stored.data == {"gpu": 0}
    assert stored.created_at is not None


def test_it_gives_increasing_ids(db):
    ids = [make_event().id for _ in range(5)]
    assert ids == sorted(ids) and len(set(ids)) == 5


def test_it_refuses_to_change_or_delete_an_event_in_python(db):
    event = make_event()
    event.title = "rewritten"
    with pytest.raises(AppendOnlyError):
        event.save()
    with pytest.raises(AppendOnlyError):
        event.delete()


def test_it_refuses_to_update_an_event_in_the_database(db):
    event = make_event()
    with pytest.raises(IntegrityError), transaction.atomic():
        Event.objects.filter(id=event.id).update(title="rewritten")
    assert Event.objects.get(id=event.id).title == "GPU 0 granted to gaia-study"


def test_it_forgets_the_event_when_the_callers_transaction_rolls_back(db):
    with pytest.raises(RuntimeError), transaction.atomic():
        make_event()
        raise RuntimeError("the state change failed")
    assert not Event.objects.exists()


def test_it_offers_no_add_change_or_delete_in_the_admin(rf, operator):
    admin = site._registry[Event]
    request = rf.get("/admin/")
    request.user = operator
    assert not admin.has_add_permission(request)
    assert not admin.has_change_permission(request)
    assert not admin.has_delete_permission(request)


def test_it_serves_the_admin_list_read_only(client, django_user_model, db):
    make_event()
    admin_user = django_user_model.objects.create_superuser("root", password="x" * 12)
    client.force_login(admin_user)
    listing = client.get("/admin/notifications/event/?severity__exact=info&q=granted")
    assert listing.status_code == 200
    assert b"GPU 0 granted to gaia-study" in listing.content
    assert client.get("/admin/notifications/event/add/").status_code == 403


def test_it_lists_events_after_an_id_in_ascending_order(operator_client):
    first, second, third = make_event(), make_event(type="lease.released"), make_event()
    response = operator_client.get(f"/api/events/?after={first.id}")
    assert response.status_code == 200
    assert [e["id"] for e in response.json()["results"]] == [second.id, third.id]


def test_it_filters_events_by_type(operator_client):
    make_event()
    released = make_event(type="lease.released")
    response = operator_client.get("/api/events/?type=lease.released")
    assert [e["id"] for e in response.json()["results"]] == [released.id]


def test_it_refuses_a_bad_filter_with_400(operator_client):
    response = operator_client.get("/api/events/?after=yesterday")
    assert response.status_code == 400
    assert "after" in response.json()["fields"]


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_it_refuses_to_edit_events_through_the_api(operator_client, method):
    event = make_event()
    response = getattr(operator_client, method)(f"/api/events/{event.id}/", {"title": "x"}, format="json")
    assert response.status_code == 405
    assert Event.objects.get(id=event.id).title == "GPU 0 granted to gaia-study"


def test_it_refuses_to_create_events_through_the_api(operator_client):
    response = operator_client.post("/api/events/", {"type": "x", "title": "y"}, format="json")
    assert response.status_code == 405


@pytest.mark.postgres
def test_it_refuses_to_update_an_event_on_postgres(db):
    event = make_event()
    with pytest.raises(Exception, match="append-only"), transaction.atomic():
        Event.objects.filter(id=event.id).update(title="rewritten")
    assert Event.objects.get(id=event.id).title == "GPU 0 granted to gaia-study"


def test_it_puts_a_live_event_panel_on_the_admin_list(client, django_user_model, db):
    client.force_login(django_user_model.objects.create_superuser("root", password="x" * 12))
    listing = client.get("/admin/notifications/event/")
    assert b'id="live-events"' in listing.content
    assert b"notifications/live-events.js" in listing.content


def test_it_clamps_huge_paging_numbers_instead_of_failing(operator_client):
    make_event()
    response = operator_client.get("/api/events/?limit=20241769707150948433920&offset=99999999999999999999")
    assert response.status_code == 200
    assert response.json()["results"] == []
    first_page = operator_client.get("/api/events/?limit=20241769707150948433920").json()
    assert len(first_page["results"]) == 1
