"""The serving pool (gaiaorch.serving): synchronous views in one hop on a few threads that keep
their database connections; async views and WebSockets still on the event loop."""

from __future__ import annotations

import json
import threading

import pytest
from asgiref.sync import sync_to_async
from asgiref.testing import ApplicationCommunicator
from django.db import connection
from django.db.backends.signals import connection_created

from gaiaorch import serving
from gaiaorch.auth import ensure_service_account
from gaiaorch.tests.asgi import http_scope
from notifications.models import Event

pytestmark = pytest.mark.django_db(transaction=True)


def scope(method: str, path: str, token: str | None = None, length: int = 0) -> dict:
    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")]
    headers.append((b"content-length", str(length).encode()))
    if token:
        headers.append((b"authorization", f"Token {token}".encode()))
    return http_scope(method, path, headers)


async def request(method: str, path: str, token: str | None = None, body: dict | None = None):
    from console.asgi import application

    payload = json.dumps(body).encode() if body is not None else b""
    app = ApplicationCommunicator(application, scope(method, path, token, len(payload)))
    await app.send_input({"type": "http.request", "body": payload, "more_body": False})
    start = await app.receive_output(10)
    parts = [await app.receive_output(10)]
    while parts[-1].get("more_body"):
        parts.append(await app.receive_output(10))
    await app.wait(10)
    return start["status"], b"".join(part.get("body", b"") for part in parts)


@pytest.fixture
def connects():
    """The threads that opened a database connection while the test ran."""
    threads: list[str] = []

    def record(sender, connection, **kwargs):
        threads.append(threading.current_thread().name)

    connection_created.connect(record)
    yield threads
    connection_created.disconnect(record)


async def test_it_serves_request_after_request_on_the_connections_its_threads_keep(connects):
    serving.close_connections()  # start from threads without connections
    token = await sync_to_async(ensure_service_account)("gaia-audio", rotate=True)
    connects.clear()
    for _ in range(4 * serving.THREADS):
        status, body = await request("GET", "/gpu/status", token)
        assert status == 200, body
    # at most one connection per serving thread, all opened there: none per request
    assert 1 <= len(connects) <= serving.THREADS
    assert all(name.startswith("serving") for name in connects)


async def test_it_answers_writes_and_their_events_from_the_pool(connects):
    token = await sync_to_async(ensure_service_account)("gaia-audio", rotate=True)
    status, body = await request("POST", "/gpu/acquire", token, {"requester": "gaia-audio", "reason": "tts"})
    assert status == 200, body
    lease = json.loads(body)
    status, body = await request("POST", "/gpu/release", token, {"lease_id": lease["lease_id"]})
    assert status == 200, body
    types = await sync_to_async(lambda: list(Event.objects.order_by("id").values_list("type", flat=True)))()
    assert "lease.granted" in types and "lease.released" in types


async def test_it_leaves_async_views_on_the_event_loop():
    from handoffs.api.views import waiting  # noqa: F401  (the handoff start that waits is async)

    assert serving._view_is_async("/gpu/wait")
    assert not serving._view_is_async("/gpu/status")
    assert not serving._view_is_async("/no/such/path")


async def test_it_answers_a_refused_request_and_an_unknown_path_like_django():
    status, body = await request("POST", "/gpu/acquire", None, {"requester": "gaia-audio"})
    assert status == 401
    assert json.loads(body)["error"] == "not_authenticated"
    status, _ = await request("GET", "/no/such/path")
    assert status == 404


def test_it_closes_every_serving_threads_connection():
    def connected() -> bool:
        return connection.connection is not None

    # a connection on each thread, then none
    barrier = threading.Barrier(serving.THREADS)

    def open_one() -> bool:
        barrier.wait(timeout=10)
        Event.objects.exists()
        return connected()

    assert all(f.result() for f in [serving.POOL.submit(open_one) for _ in range(serving.THREADS)])
    serving.close_connections()
    barrier = threading.Barrier(serving.THREADS)

    def check() -> bool:
        barrier.wait(timeout=10)
        return connected()

    assert not any(f.result() for f in [serving.POOL.submit(check) for _ in range(serving.THREADS)])
