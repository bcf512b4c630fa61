"""A handoff type is one YAML entry: startable from the API, the CLI, the console and the client."""

import httpx
import pytest
from django.core.management import call_command
from django.test import Client as DjangoClient

from gaiaorch_client import Client
from handoffs import tasks
from handoffs.models import Handoff, Phase

pytestmark = pytest.mark.django_db

NIGHTLY = {"source": "gaia-core", "destination": "gaia-study"}


@pytest.fixture
def nightly(gaia, configure, hold_gpu):
    """A type nobody wrote code for: it exists only under handoffs: in the configuration."""
    configure("handoffs", nightly_lora=NIGHTLY)
    hold_gpu("gaia-core")


def completes(handoff_id) -> Handoff:
    tasks.run_handoff(str(handoff_id))
    handoff = Handoff.objects.get(pk=handoff_id)
    assert (handoff.type, handoff.phase) == ("nightly_lora", Phase.COMPLETED)
    return handoff


def test_it_starts_a_yaml_only_type_on_its_seed_style_path(nightly, client_for):
    answer = client_for("gaia-study").post("/handoff/nightly-lora", {}, format="json")
    assert answer.status_code == 202
    assert answer.json()["status_url"] == f"/handoff/{answer.json()['handoff_id']}/status"
    completed = completes(answer.json()["handoff_id"])
    assert (completed.source, completed.destination) == ("gaia-core", "gaia-study")


def test_it_starts_a_yaml_only_type_from_the_resource_endpoint(nightly, operator_client):
    answer = operator_client.post("/api/handoffs/", {"type": "nightly_lora"}, format="json")
    assert answer.status_code == 202
    completes(answer.json()["handoff_id"])


def test_it_refuses_an_unconfigured_type_naming_the_known_ones(nightly, operator_client):
    by_path = operator_client.post("/handoff/daily-lora", {}, format="json")
    assert by_path.status_code == 404
    assert "nightly_lora" in by_path.json()["known"]
    by_body = operator_client.post("/api/handoffs/", {"type": "daily_lora"}, format="json")
    assert (by_body.status_code, by_body.json()["error"]) == (400, "unknown_handoff_type")


def test_it_starts_a_yaml_only_type_from_the_command_line(nightly, capsys):
    with pytest.raises(SystemExit) as exited:
        call_command("handoff", "nightly-lora", "--no-wait", "--reason", "from cron")
    assert exited.value.code == 0
    handoff = Handoff.objects.get()
    assert handoff.reason == "from cron"
    completes(handoff.id)


def test_it_starts_a_yaml_only_type_from_the_console(nightly, admin_client):
    form = admin_client.get("/admin/dashboard/action/start-handoff")
    assert b"nightly_lora" in form.content
    admin_client.post(
        "/admin/dashboard/action/start-handoff", {"type": "nightly_lora", "gpu": 0, "reason": "console"}
    )
    completes(Handoff.objects.get().id)


def test_it_starts_a_yaml_only_type_from_the_python_client(nightly):
    from gaiaorch.auth import ensure_service_account

    web = DjangoClient()

    def through_django(request: httpx.Request) -> httpx.Response:
        answer = web.generic(
            request.method,
            request.url.raw_path.decode(),
            request.content,
            content_type="application/json",
            headers=dict(request.headers),
        )
        return httpx.Response(answer.status_code, content=answer.content, headers=dict(answer.items()))

    token = ensure_service_account("gaia-study")
    with Client("http://127.0.0.1:6410", token=token, transport=httpx.MockTransport(through_django)) as study:
        started = study.start_handoff("nightly-lora", reason="from the client")
    completes(started["handoff_id"])
