"""The operator dashboard: the page, its JSON feed and every confirmed, reasoned action."""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages
from django.test import Client

from containers import services as containers
from containers.models import Operation, OperationKind, OperationStatus
from gaiaorch import config as gaiaorch_config
from gaiaorch import telemetry
from handoffs.models import Handoff, Phase
from leases import services as leases
from leases.models import LeaseStatus
from notifications.models import Event
from notifications.services import record_event

DASHBOARD = "/admin/dashboard/"
FEED = "/admin/dashboard/feed"
GPUS = "/admin/dashboard/gpus"
GPU_CARDS = "leases/gpu_cards.html"
OPERATOR_ACTIONS = [
    "revoke-lease",
    "cancel-lease",
    "live-stop",
    "live-start",
    "candidate-start",
    "candidate-stop",
    "service-start",
    "service-stop",
    "service-restart",
    "swap",
    "start-handoff",
    "cancel-handoff",
    "retry-handoff",
]


def action_url(name: str) -> str:
    return f"/admin/dashboard/action/{name}"


@pytest.fixture
def fake_gpu(settings, tmp_path):
    """GPU 0, 24 GiB, 11 GiB in use (Prime loaded)."""
    settings.GPU_BACKEND = "fake"
    settings.FAKE_GPU_FILE = str(tmp_path / "gpus.json")
    telemetry.write_fake(tmp_path / "gpus.json", [{"index": 0, "total_mib": 24576, "used_mib": 11264}])


@pytest.fixture
def console(client, operator, fake_gpu):
    """Olivia's browser, logged in to the admin."""
    client.force_login(operator)
    return client


def shown(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def prime_holds_gpu():
    return leases.acquire(requester="gaia-prime", reason="serving", actor="gaia-prime").lease


def test_it_links_the_dashboard_from_the_admin_index(console):
    response = console.get("/admin/")
    assert response.status_code == 200
    assert b'href="/admin/dashboard/"' in response.content


def test_it_sends_anonymous_visitors_to_the_login_page(client, fake_gpu):
    for url in (DASHBOARD, FEED, GPUS, action_url("live-stop")):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")


def test_it_refuses_a_service_account_session(client, django_user_model, fake_gpu):
    service = django_user_model.objects.create_user("gaia-study", password="x")
    client.force_login(service)
    assert client.get(FEED).status_code == 302


def test_it_renders_the_dashboard_with_the_current_snapshot(console):
    lease = prime_holds_gpu()
    response = console.get(DASHBOARD)
    assert response.status_code == 200
    snapshot = response.context["snapshot"]
    assert snapshot["gpu"]["gpus"][0]["owner"] == "gaia-prime"
    assert b'id="console-snapshot"' in response.content
    assert str(lease.id).encode() in response.content
    assert b"console/dashboard.js" in response.content
    assert b"/admin/dashboard/action/start-handoff?type=prime_to_study" in response.content


def test_it_warns_on_the_dashboard_while_tokenless_writes_are_accepted(console, settings):
    assert b"console-tokenless" not in console.get("/admin/dashboard/").content
    orchestrator = {**settings.GAIAORCH["orchestrator"], "trusted_networks": ["127.0.0.1/32=olivia"]}
    settings.GAIAORCH = {**settings.GAIAORCH, "orchestrator": orchestrator}
    page = console.get("/admin/dashboard/").content.decode()
    assert 'id="console-tokenless"' in page
    assert "Writes without a token are accepted from 127.0.0.1/32 (as olivia)" in page


def test_it_feeds_gpus_handoffs_containers_and_events_as_json(console):
    lease = prime_holds_gpu()
    leases.acquire(requester="gaia-study", reason="training", actor="gaia-study")
    Handoff.objects.create(
        type="prime_to_study", source="gaia-prime", destination="gaia-study", requested_by="olivia"
    )
    record_event("test.ping", "Olivia checks the console", actor="olivia")

    body = console.get(FEED).json()

    gpu = body["gpu"]["gpus"][0]
    assert gpu["owner"] == "gaia-prime"
    assert gpu["fencing_token"] == lease.fencing_token
    assert gpu["memory"]["used_mb"] == 11264
    assert [entry["requester"] for entry in gpu["queue"]] == ["gaia-study"]
    assert body["handoffs"]["active"][0]["phase"] == Phase.INITIATED
    assert {service["service"] for service in body["containers"]["services"]} >= {"gaia-core", "gaia-prime"}
    assert body["events"][0]["title"] == "Olivia checks the console"
    assert body["events"][0]["id"] == Event.objects.order_by("-id").first().id


def test_it_shows_a_confirmation_with_a_reason_before_revoking(console):
    lease = prime_holds_gpu()
    response = console.get(action_url("revoke-lease"), {"lease_id": lease.id})
    assert response.status_code == 200
    assert b'name="reason"' in response.content
    assert b"csrfmiddlewaretoken" in response.content
    assert response.context["target"] == "gaia-prime on GPU 0 (active, fencing token 1), asked for: serving."
    lease.refresh_from_db()
    assert lease.status == LeaseStatus.ACTIVE


def test_it_refuses_an_action_without_a_reason(console):
    lease = prime_holds_gpu()
    response = console.post(action_url("revoke-lease"), {"lease_id": lease.id, "reason": ""})
    assert response.status_code == 200
    assert response.context["form"].errors["reason"]
    lease.refresh_from_db()
    assert lease.status == LeaseStatus.ACTIVE


def test_it_revokes_a_lease_with_the_operators_reason(console):
    lease = prime_holds_gpu()
    response = console.post(action_url("revoke-lease"), {"lease_id": lease.id, "reason": "Prime is wedged"})
    assert response.status_code == 302
    assert response["Location"] == DASHBOARD
    lease.refresh_from_db()
    assert lease.status == LeaseStatus.REVOKED
    assert lease.ended_by == "olivia"
    assert "Prime is wedged" in lease.end_reason


def test_it_cancels_a_waiting_request(console):
    prime_holds_gpu()
    waiting = leases.acquire(requester="gaia-study", reason="training", actor="gaia-study").lease
    console.post(action_url("cancel-lease"), {"lease_id": waiting.id, "reason": "not tonight"})
    waiting.refresh_from_db()
    assert waiting.status == LeaseStatus.CANCELLED


def test_it_shows_a_refusal_as_a_message_not_a_server_error(console):
    lease = prime_holds_gpu()
    leases.release(lease.id, actor="gaia-prime")
    response = console.post(
        action_url("revoke-lease"), {"lease_id": lease.id, "reason": "again"}, follow=True
    )
    assert response.status_code == 200
    assert any("refused" in message for message in shown(response))


def source_holds_gpu(handoff_type: str = "prime_to_study"):
    source = gaiaorch_config.current().handoffs.types[handoff_type].source
    return leases.acquire(requester=source, reason="serving", actor=source).lease


def test_it_starts_a_handoff_with_the_reason(console):
    source_holds_gpu()
    response = console.post(
        action_url("start-handoff") + "?type=prime_to_study",
        {"type": "prime_to_study", "gpu": 0, "reason": "nightly training"},
        follow=True,
    )
    assert any("Started handoff" in message for message in shown(response))
    handoff = Handoff.objects.get()
    assert (handoff.type, handoff.reason, handoff.requested_by) == (
        "prime_to_study",
        "nightly training",
        "olivia",
    )


def test_it_shows_the_conflict_when_a_handoff_is_already_running(console):
    source_holds_gpu()
    Handoff.objects.create(
        type="prime_to_study", source="gaia-prime", destination="gaia-study", requested_by="x"
    )
    response = console.post(
        action_url("start-handoff"), {"type": "prime_to_study", "gpu": 0, "reason": "again"}, follow=True
    )
    assert response.status_code == 200
    assert any("refused" in message for message in shown(response))
    assert Handoff.objects.count() == 1


def test_it_cancels_the_running_handoff_with_the_reason(console):
    handoff = Handoff.objects.create(
        type="prime_to_study", source="gaia-prime", destination="gaia-study", requested_by="x"
    )
    page = console.get(action_url("cancel-handoff"), {"handoff_id": handoff.id})
    assert "prime_to_study on GPU 0 (gaia-prime → gaia-study), now initiated." in page.content.decode()
    console.post(action_url("cancel-handoff"), {"handoff_id": handoff.id, "reason": "wrong night"})
    handoff.refresh_from_db()
    assert handoff.cancel_requested_by == "olivia"
    event = Event.objects.get(type="handoff.cancel_requested")
    assert event.message == "wrong night"


@pytest.fixture
def requested(monkeypatch):
    """Records the container requests the console makes (the real ones drive Docker)."""
    calls = []

    def request_stack_operation(kind, **options):
        calls.append(("stack", kind, options))
        return Operation(id=7, kind=kind, services=["gaia-core"])

    def request_swap(service, target, **options):
        calls.append(("swap", service, target, options))
        return Operation(id=8, kind=OperationKind.SWAP, services=[service])

    monkeypatch.setattr(containers, "request_stack_operation", request_stack_operation)
    monkeypatch.setattr(containers, "request_swap", request_swap)
    return calls


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("live-stop", OperationKind.LIVE_STOP),
        ("live-start", OperationKind.LIVE_START),
        ("candidate-stop", OperationKind.CANDIDATE_STOP),
    ],
)
def test_it_requests_a_stack_operation_with_the_reason(console, requested, name, kind):
    assert console.get(action_url(name)).status_code == 200
    response = console.post(action_url(name), {"reason": "maintenance"}, follow=True)
    assert requested == [("stack", kind, {"actor": "olivia", "reason": "maintenance"})]
    assert any("Operation #7" in message for message in shown(response))


@pytest.mark.parametrize(("checkbox", "gpu_enabled"), [({"gpu_enabled": "on"}, True), ({}, False)])
def test_it_starts_the_candidate_stack_with_or_without_gpu(console, requested, checkbox, gpu_enabled):
    console.post(action_url("candidate-start"), {"reason": "try the new build", **checkbox})
    assert requested == [
        (
            "stack",
            OperationKind.CANDIDATE_START,
            {"actor": "olivia", "reason": "try the new build", "gpu_enabled": gpu_enabled},
        )
    ]


def test_it_prefills_the_gpu_checkbox_from_the_dashboard_button(console):
    response = console.get(action_url("candidate-start"), {"gpu_enabled": "on"})
    assert b'id="id_gpu_enabled" checked' in response.content
    assert b'id="id_gpu_enabled" checked' not in console.get(action_url("candidate-start")).content


def test_it_swaps_a_service(console, requested):
    response = console.get(action_url("swap"), {"service": "gaia-core", "target": "candidate"})
    assert b'<option value="gaia-core" selected>' in response.content
    console.post(action_url("swap"), {"service": "gaia-core", "target": "candidate", "reason": "canary"})
    assert requested == [("swap", "gaia-core", "candidate", {"actor": "olivia", "reason": "canary"})]


def test_it_shows_a_busy_stack_as_a_message(console):
    """The real service, reaching the real Docker Engine, refuses: another operation runs."""
    Operation.objects.create(kind=OperationKind.LIVE_STOP, status=OperationStatus.RUNNING, requested_by="x")
    response = console.post(action_url("live-start"), {"reason": "bring it back"}, follow=True)
    assert response.status_code == 200
    messages = shown(response)
    assert any("refused" in message and "still running" in message for message in messages), (
        f"{messages}: is dockerd running? scripts/provision starts it"
    )


def test_it_says_when_the_lease_to_confirm_does_not_exist(console):
    page = console.get(action_url("revoke-lease"), {"lease_id": "7d3c4a52-0000-4000-8000-000000000000"})
    assert page.status_code == 200
    assert "7d3c4a52" in page.context["target"]


def test_it_answers_404_for_an_unknown_action(console):
    assert console.get(action_url("format-disk")).status_code == 404


def test_it_refuses_a_post_without_the_csrf_token(operator, fake_gpu):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(operator)
    lease = prime_holds_gpu()
    response = browser.post(action_url("revoke-lease"), {"lease_id": lease.id, "reason": "forged"})
    assert response.status_code == 403
    lease.refresh_from_db()
    assert lease.status == LeaseStatus.ACTIVE


def test_it_accepts_the_confirmation_form_with_its_csrf_token(operator, fake_gpu):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(operator)
    lease = prime_holds_gpu()
    page = browser.get(action_url("revoke-lease"), {"lease_id": lease.id})
    token = page.context["csrf_token"]
    answer = {"lease_id": lease.id, "reason": "confirmed", "csrfmiddlewaretoken": token}
    assert browser.post(action_url("revoke-lease"), answer).status_code == 302
    lease.refresh_from_db()
    assert lease.status == LeaseStatus.REVOKED


def test_it_prefills_several_services_and_stops_them_with_the_reason(console, monkeypatch):
    calls = []

    def request_service_operation(kind, names, **options):
        calls.append((kind, names, options))
        return Operation(id=9, kind=kind, services=names)

    monkeypatch.setattr(containers, "request_service_operation", request_service_operation)
    page = console.get(action_url("service-stop"), {"services": ["gaia-web", "gaia-mcp"]})
    assert page.content.count(b" checked>") == 2
    answer = {"services": ["gaia-web", "gaia-mcp"], "reason": "memory leak"}
    console.post(action_url("service-stop"), answer)
    assert calls == [
        (OperationKind.SERVICE_STOP, ["gaia-web", "gaia-mcp"], {"actor": "olivia", "reason": "memory leak"})
    ]


def test_it_links_the_dashboard_from_the_header_of_admin_pages(console):
    page = console.get(action_url("live-stop"))
    assert b'<a href="/admin/dashboard/">Operator dashboard</a>' in page.content


def template_names(response) -> list[str]:
    return [template.name for template in response.templates]


def test_it_draws_the_gpu_cards_on_the_page_with_the_template_of_the_gpu_admin(console):
    lease = prime_holds_gpu()
    waiting = leases.acquire(requester="gaia-study", reason="training", actor="gaia-study").lease
    page = console.get(DASHBOARD)
    assert GPU_CARDS in template_names(page)
    assert GPU_CARDS in template_names(console.get("/admin/leases/gpu/"))
    html = page.content.decode()
    assert 'id="gpu-0"' in html and "Held by <strong>gaia-prime</strong>" in html
    assert 'style="width: 46%"' in html  # 11 of 24 GiB measured in use
    assert f'href="/admin/dashboard/action/revoke-lease?lease_id={lease.id}"' in html
    assert f'href="/admin/dashboard/action/cancel-lease?lease_id={waiting.id}"' in html


def test_it_redraws_the_gpu_cards_from_the_same_template_for_the_page_to_poll(console):
    prime_holds_gpu()
    cards = console.get(GPUS)
    assert cards.status_code == 200 and template_names(cards)[-1] == GPU_CARDS
    html = cards.content.decode()
    assert html.lstrip().startswith('<div class="gpu-card" id="gpu-0">')
    assert "fencing token <strong>1</strong>" in html and "<html" not in html
    leases.revoke(leases.current_holder(0).id, actor="olivia", reason="test")
    assert "Free. Next fencing token 2." in console.get(GPUS).content.decode()


@pytest.mark.parametrize("name", OPERATOR_ACTIONS)
def test_it_confirms_every_registered_action_and_requires_a_reason(console, name):
    assert console.get(action_url(name)).status_code == 200
    events = Event.objects.count()
    for reason in ("", "x" * 501):
        response = console.post(action_url(name), {"reason": reason})
        assert response.status_code == 200 and response.context["form"].errors["reason"]
    assert Event.objects.count() == events


def test_it_retries_an_ended_handoff_with_the_reason(console):
    source_holds_gpu()
    ended = Handoff.objects.create(
        type="prime_to_study",
        source="gaia-prime",
        destination="gaia-study",
        requested_by="x",
        reason="nightly training",
        phase=Phase.FAILED,
    )
    page = console.get(action_url("retry-handoff"), {"handoff_id": ended.id})
    assert "prime_to_study on GPU 0 (gaia-prime → gaia-study), now failed." in page.content.decode()
    response = console.post(
        action_url("retry-handoff"), {"handoff_id": ended.id, "reason": "driver fixed"}, follow=True
    )
    assert any(f"a retry of {ended.id}" in message for message in shown(response))
    retried = Handoff.objects.exclude(pk=ended.pk).get()
    assert (retried.reason, retried.requested_by) == ("nightly training", "olivia")
    event = Event.objects.get(type="handoff.started")
    assert (event.actor, event.message) == ("olivia", f"Retry of {ended.id}: driver fixed")
