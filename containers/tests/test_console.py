"""The admin console and the management command."""

import json

import pytest
from django.core.management import CommandError, call_command

from containers import services
from containers.models import Container, Operation
from containers.tests.conftest import stack_config
from notifications.models import Event

pytestmark = pytest.mark.django_db


@pytest.fixture
def configured(settings, monkeypatch):
    settings.GAIAORCH = stack_config("busybox", network="gaia-test-net")
    monkeypatch.setattr(services, "require_docker", lambda: None)
    monkeypatch.setattr(services, "enqueue", lambda operation_id: None)


@pytest.fixture
def admin_client_for(client, django_user_model):
    admin = django_user_model.objects.create_superuser("ada", password="not-a-real-password")
    client.force_login(admin)
    return client


def test_it_shows_containers_with_stack_state_and_health(configured, admin_client_for):
    Container.objects.create(service="t-web", stack="live", role="web", state="running", health="healthy")

    page = admin_client_for.get("/admin/containers/container/").content.decode()

    assert "t-web" in page and "running" in page and "healthy" in page


def test_it_starts_services_from_the_console_through_the_service(configured, admin_client_for):
    row = Container.objects.create(service="t-web", stack="live", role="web", state="exited")

    asked = admin_client_for.post(
        "/admin/containers/container/",
        {"action": "service_start_action", "_selected_action": [row.pk]},
    )
    assert asked.status_code == 302
    assert asked["Location"] == "/admin/dashboard/action/service-start?services=t-web"
    assert not Operation.objects.exists()
    confirmation = admin_client_for.get(asked["Location"])
    assert b'value="t-web" id="id_services_' in confirmation.content
    admin_client_for.post(asked["Location"], {"services": ["t-web"], "reason": "it crashed"})

    operation = Operation.objects.get()
    assert operation.kind == "service_start"
    assert operation.services == ["t-mcp", "t-core", "t-web"]
    assert operation.requested_by == "ada"
    assert Event.objects.get(type="container.operation_requested").message == "it crashed"


def test_it_asks_to_confirm_a_swap_of_one_service(configured, admin_client_for):
    row = Container.objects.create(service="t-core", stack="live", role="core", state="running")

    asked = admin_client_for.post(
        "/admin/containers/container/",
        {"action": "swap_to_candidate_action", "_selected_action": [row.pk]},
    )

    assert asked["Location"] == "/admin/dashboard/action/swap?service=t-core&target=candidate"


def test_it_offers_only_allowlisted_actions(configured, admin_client_for):
    Container.objects.create(service="t-web", stack="live", role="web", state="exited")

    page = admin_client_for.get("/admin/containers/container/").content.decode()

    assert "delete_selected" not in page
    assert "swap_to_candidate_action" in page


def test_it_shows_operations_read_only(configured, admin_client_for):
    operation = Operation.objects.create(kind="live_stop", requested_by="olivia")

    assert admin_client_for.get(f"/admin/containers/operation/{operation.pk}/change/").status_code == 200
    assert admin_client_for.post(f"/admin/containers/operation/{operation.pk}/delete/").status_code == 403


def test_it_prints_the_status_as_json(configured, capsys):
    call_command("containers", "status")

    status = json.loads(capsys.readouterr().out)
    assert status["docker_available"] is False
    assert status["live"]["core"] == "unknown"


def test_it_queues_a_swap_from_the_command_line(configured, capsys):
    call_command("containers", "swap", "core", "--to", "candidate")

    params = Operation.objects.get().params
    assert (params["live"], params["candidate"], params["target"]) == (
        "t-core",
        "t-core-candidate",
        "candidate",
    )
    assert "queued" in capsys.readouterr().out


def test_it_reports_a_refusal_on_the_command_line(configured):
    with pytest.raises(CommandError, match="invalid_request: 't-nope' is not a swappable service"):
        call_command("containers", "swap", "t-nope")


@pytest.mark.django_db(transaction=True)
def test_it_waits_for_the_operation_and_reports_its_failure(configured, monkeypatch):
    def fail_at_once(operation_id):
        services.finish_operation(operation_id, error="Docker became unreachable: gone")

    monkeypatch.setattr(services, "enqueue", fail_at_once)
    with pytest.raises(CommandError, match="failed: Docker became unreachable: gone"):
        call_command("containers", "start-candidate", "--wait", "--timeout", "5")
