"""Every change to an account or its token writes an event; so does an operator's edit in the admin."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command
from django.test import RequestFactory

from gaiaorch.admin_mixins import AuditedAdmin, ReadOnlyAdmin
from gaiaorch.auth import ensure_service_account, user_for_key
from notifications.models import Event

pytestmark = pytest.mark.django_db


def account_events() -> list[tuple[str, dict]]:
    rows = Event.objects.filter(type__startswith="account.").order_by("id")
    return [(event.type, event.data) for event in rows]


def test_it_records_the_creation_of_a_service_account_and_its_token():
    key = ensure_service_account("gaia-web", actor="manage.py")
    assert account_events() == [
        ("account.created", {"account": "gaia-web", "read_only": False}),
        ("account.token_issued", {"account": "gaia-web", "prefix": key[:8], "rotated": False}),
    ]
    assert set(Event.objects.values_list("actor", flat=True)) == {"manage.py"}
    assert ensure_service_account("gaia-web") is None
    assert len(account_events()) == 2  # finding it again changes nothing


def test_it_records_a_rotation_and_a_read_only_mint_and_change():
    ensure_service_account("gaia-web")
    rotated = ensure_service_account("gaia-web", rotate=True)
    scraper = ensure_service_account("prometheus", read_only=True)
    ensure_service_account("gaia-web", read_only=True)
    ensure_service_account("gaia-web", read_only=True)  # already read-only: no second event
    assert account_events()[2:] == [
        ("account.token_issued", {"account": "gaia-web", "prefix": rotated[:8], "rotated": True}),
        ("account.created", {"account": "prometheus", "read_only": True}),
        (
            "account.token_issued",
            {"account": "prometheus", "prefix": scraper[:8], "rotated": False},
        ),
        ("account.read_only_changed", {"account": "gaia-web", "read_only": True}),
    ]


def test_it_revokes_a_token_from_the_command_line_with_its_event(capsys):
    key = ensure_service_account("gaia-web")
    call_command("service_account", "gaia-web", "--revoke")
    assert user_for_key(key) is None
    assert account_events()[-1] == ("account.token_revoked", {"account": "gaia-web", "prefix": key[:8]})
    with pytest.raises(CommandError, match="no token to revoke"):
        call_command("service_account", "gaia-web", "--revoke")
    with pytest.raises(CommandError, match="no account nobody"):
        call_command("service_account", "nobody", "--revoke")


def test_it_records_an_operators_change_to_an_account_in_the_admin(client, django_user_model):
    olivia = django_user_model.objects.create_superuser("olivia", password="not-a-real-password")
    client.force_login(olivia)
    ensure_service_account("gaia-web")
    web = django_user_model.objects.get(username="gaia-web")
    form = {
        "username": "gaia-web",
        "is_active": "on",
        "is_staff": "on",
        "groups": [group.pk for group in web.groups.all()],
        "date_joined_0": "2026-01-01",
        "date_joined_1": "00:00:00",
        "initial-date_joined_0": "2026-01-01",
        "initial-date_joined_1": "00:00:00",
    }
    response = client.post(f"/admin/auth/user/{web.pk}/change/", form)
    assert response.status_code == 302, response.content
    changed = Event.objects.get(type="admin.changed")
    what = (changed.actor, changed.data["model"], changed.data["object"], changed.data["action"])
    assert what == ("olivia", "auth.User", "gaia-web", "changed")
    assert changed.data["changed"] == [{"changed": {"fields": ["Staff status"]}}]


def test_it_gives_every_admin_either_no_edits_or_an_audit():
    """An admin an operator can edit with writes an admin.changed event (AuditedAdmin); the
    project's history admins are read-only; the handoff admin shows only read-only fields."""
    request = RequestFactory().get("/admin/")
    request.user = type("Superuser", (), {"is_active": True, "is_staff": True, "has_perm": lambda *a: True})()
    unaudited = [
        model._meta.label
        for model, model_admin in admin.site._registry.items()
        if not isinstance(model_admin, AuditedAdmin | ReadOnlyAdmin)
    ]
    assert unaudited == []
    assert isinstance(admin.site._registry[Group], AuditedAdmin)
    read_only = [a for a in admin.site._registry.values() if isinstance(a, ReadOnlyAdmin)]
    assert read_only and not any(
        a.has_add_permission(request) or a.has_change_permission(request) or a.has_delete_permission(request)
        for a in read_only
    )


def test_it_records_the_first_operators_creation_once(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    call_command("ensure_operator")
    call_command("ensure_operator")
    assert account_events() == [("account.created", {"account": "admin", "read_only": False})]
