"""Tokenless callers from trusted networks (orchestrator.trusted_networks): off by default; when on,
a request from those addresses acts as the service it names, and its events say so."""

from __future__ import annotations

import json

import pytest
from asgiref.testing import ApplicationCommunicator
from channels.testing import WebsocketCommunicator
from django.test import Client

from conftest import client_for_token
from console.asgi import application
from containers import services as containers
from containers.models import Operation
from gaiaorch.auth import ensure_service_account
from gaiaorch.tests.asgi import http_scope
from leases.models import Lease
from notifications.models import Event

pytestmark = pytest.mark.django_db

SERVICES = "172.18.0.0/16"
SERVICE_ADDRESS = "172.18.0.7"
ACQUIRE = {"requester": "gaia-audio", "reason": "Prime Speaker TTS synthesis"}


@pytest.fixture
def trust(settings):
    """trust(*entries, proxies=[]): orchestrator.trusted_networks of a new document."""

    def apply(*entries, proxies=()):
        orchestrator = {
            **settings.GAIAORCH.get("orchestrator", {}),
            "trusted_networks": list(entries),
            "trusted_proxies": list(proxies),
        }
        settings.GAIAORCH = {**settings.GAIAORCH, "orchestrator": orchestrator}

    return apply


def post(path: str, body: dict | None = None, address: str = SERVICE_ADDRESS, **headers):
    return Client(REMOTE_ADDR=address).post(
        path, json.dumps(body) if body is not None else b"", content_type="application/json", **headers
    )


def test_it_refuses_a_tokenless_write_while_no_network_is_trusted(db):
    response = post("/gpu/acquire", ACQUIRE, address="127.0.0.1")
    assert response.status_code == 401
    assert not Lease.objects.exists()


def test_it_acts_as_the_requester_a_tokenless_acquire_names_and_marks_its_events(trust):
    trust(SERVICES)
    response = post("/gpu/acquire", ACQUIRE)
    assert response.status_code == 200, response.content
    assert Lease.objects.get().requester == "gaia-audio"
    events = list(Event.objects.filter(type__startswith="lease."))
    assert events and all(event.actor == "gaia-audio" for event in events)
    assert all(event.data["authenticated"] is False for event in events)
    assert all(event.data["client"] == SERVICE_ADDRESS for event in events)


def test_it_marks_nothing_on_the_events_of_a_caller_with_a_token(trust, service_token):
    trust(SERVICES)
    response = client_for_token(service_token("gaia-audio")).post("/gpu/acquire", ACQUIRE, format="json")
    assert response.status_code == 200
    assert all("authenticated" not in event.data for event in Event.objects.all())


@pytest.mark.parametrize(
    ("address", "headers"),
    [
        ("10.9.0.4", {}),  # outside every trusted network
        (SERVICE_ADDRESS, {"HTTP_AUTHORIZATION": "Token not-a-real-token"}),  # never downgraded
        (SERVICE_ADDRESS, {"HTTP_AUTHORIZATION": "Bearer something"}),
        (SERVICE_ADDRESS, {"HTTP_ORIGIN": "http://evil.example"}),  # a browser page of any site
        ("10.9.0.4", {"HTTP_X_FORWARDED_FOR": SERVICE_ADDRESS}),  # not from a trusted proxy
    ],
)
def test_it_refuses_a_tokenless_write_that_is_not_from_a_trusted_caller(trust, address, headers):
    trust(SERVICES)
    response = post("/gpu/acquire", ACQUIRE, address=address, **headers)
    assert response.status_code == 401, response.content
    assert not Lease.objects.exists()


def test_it_reads_the_client_from_x_forwarded_for_only_behind_a_trusted_proxy(trust):
    trust(SERVICES, proxies=["10.9.0.2/32"])
    spoofed = post(
        "/gpu/acquire", ACQUIRE, address="10.9.0.2", HTTP_X_FORWARDED_FOR=f"{SERVICE_ADDRESS}, 10.1.1.1"
    )
    assert spoofed.status_code == 401  # the proxy saw 10.1.1.1; what the caller wrote before is not read
    forwarded = post("/gpu/acquire", ACQUIRE, address="10.9.0.2", HTTP_X_FORWARDED_FOR=SERVICE_ADDRESS)
    assert forwarded.status_code == 200
    assert Event.objects.filter(type="lease.granted").get().data["client"] == SERVICE_ADDRESS


def test_it_reads_an_ipv4_caller_on_a_dual_stack_socket_as_ipv4(trust):
    trust(SERVICES)
    assert post("/gpu/acquire", ACQUIRE, address=f"::ffff:{SERVICE_ADDRESS}").status_code == 200


@pytest.fixture
def docker_answers(monkeypatch):
    monkeypatch.setattr(containers, "require_docker", lambda: containers.docker_reachable(reachable=True))
    monkeypatch.setattr(containers, "enqueue", lambda operation_id: None)


def test_it_refuses_with_401_a_request_naming_no_service_from_a_network_without_acts_as(
    trust, docker_answers
):
    trust(SERVICES)
    response = post("/containers/live/stop")
    assert response.status_code == 401
    assert "acts_as" in response.json()["detail"]
    assert response["WWW-Authenticate"] == "Token"
    assert not Operation.objects.exists()


def test_it_gives_a_request_naming_no_service_the_rights_of_acts_as(trust, docker_answers, operator):
    trust({"network": SERVICES, "acts_as": "gaia-stack"}, "127.0.0.1/32=olivia")
    refused = post("/containers/live/stop")
    assert refused.status_code == 403
    assert (refused.json()["missing_right"], refused.json()["actor"]) == ("live_stop", "gaia-stack")
    accepted = post("/containers/live/stop", address="127.0.0.1")
    assert accepted.status_code == 202
    requested = Event.objects.get(type="container.operation_requested")
    assert (requested.actor, requested.data["authenticated"]) == ("olivia", False)


def test_it_never_lets_a_tokenless_caller_act_as_a_read_only_account(trust, docker_answers):
    ensure_service_account("prometheus", read_only=True)
    trust(f"{SERVICES}=prometheus")
    assert post("/containers/live/stop").json()["missing_right"] == "write"


def test_it_lets_a_trusted_caller_read_while_reads_are_closed(trust, settings):
    settings.OPEN_READS = False
    trust(SERVICES)
    assert Client(REMOTE_ADDR=SERVICE_ADDRESS).get("/gpu/status").status_code == 200
    assert Client(REMOTE_ADDR="10.9.0.4").get("/gpu/status").status_code == 401


@pytest.mark.django_db(transaction=True)  # the async view's thread must see the configuration's rows
def test_it_takes_the_address_from_the_asgi_scope_of_the_async_wait(trust):
    trust(SERVICES)
    body = json.dumps({**ACQUIRE, "timeout_seconds": 1}).encode()
    assert asgi_post("/gpu/wait", body, client=("10.9.0.4", 5000))[0] == 401
    spoofed = asgi_post("/gpu/wait", body, client=("10.9.0.4", 5000), forwarded_for=SERVICE_ADDRESS)
    assert spoofed[0] == 401
    status, answer = asgi_post("/gpu/wait", body, client=(SERVICE_ADDRESS, 5000))
    assert status == 200, answer
    assert Event.objects.filter(type="lease.granted").get().data["client"] == SERVICE_ADDRESS


def asgi_post(path: str, body: bytes, client, forwarded_for: str = "") -> tuple[int, dict]:
    """One POST through the ASGI application, as daphne hands it over: the peer in scope["client"]."""
    from asgiref.sync import async_to_sync

    headers = [(b"host", b"127.0.0.1:6410"), (b"content-type", b"application/json")]
    if forwarded_for:
        headers.append((b"x-forwarded-for", forwarded_for.encode()))
    scope = http_scope("POST", path, headers, client)

    async def exchange():
        communicator = ApplicationCommunicator(application, scope)
        await communicator.send_input({"type": "http.request", "body": body})
        start = await communicator.receive_output(10)
        content = await communicator.receive_output(10)
        return start["status"], json.loads(content["body"])

    return async_to_sync(exchange)()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("client", "headers", "accepted"),
    [
        ((SERVICE_ADDRESS, 41000), [], True),
        (("10.9.0.4", 41000), [], False),
        ((SERVICE_ADDRESS, 41000), [(b"origin", b"http://evil.example")], False),
        ((SERVICE_ADDRESS, 41000), [(b"authorization", b"Token not-a-real-token")], False),
    ],
)
async def test_it_streams_notifications_to_a_tokenless_reader_of_a_trusted_network(
    trust, client, headers, accepted
):
    from asgiref.sync import sync_to_async

    await sync_to_async(trust)(SERVICES)
    socket = WebsocketCommunicator(application, "/ws/notifications", headers=headers)
    socket.scope["client"] = client  # read when the connection starts, below
    connected, _ = await socket.connect(timeout=5)
    await socket.disconnect()
    assert connected is accepted
