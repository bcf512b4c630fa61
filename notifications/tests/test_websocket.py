import asyncio

import pytest
from channels.db import database_sync_to_async
from channels_redis.core import RedisChannelLayer  # type: ignore[import-untyped]  # ships no type information
from django.contrib.sessions.models import Session
from django.db import DatabaseError
from django.test import Client

from gaiaorch.auth import ensure_service_account
from gaiaorch.settings import channel_layers
from notifications import consumers, dispatch
from notifications.models import Event
from notifications.tests.conftest import emit, fresh_redis, receive_all

pytestmark = pytest.mark.django_db(transaction=True)


async def test_it_refuses_a_connection_without_credentials(connect):
    _, connected, code = await connect(token=None)
    assert (connected, code) == (False, consumers.CLOSE_UNAUTHORIZED)


async def test_it_refuses_a_wrong_token(connect):
    _, connected, _ = await connect(token="not-a-token")
    assert not connected


async def test_it_accepts_a_token_in_the_authorization_header(connect, web_token):
    _, connected, _ = await connect(token=None, headers=[(b"authorization", f"Token {web_token}".encode())])
    assert connected


async def test_it_streams_to_a_read_only_account(connect):
    """Reading is all a read-only account (a metrics scraper, a dashboard) may do, and it may."""
    token = await database_sync_to_async(ensure_service_account)("grafana", read_only=True)
    _, connected, _ = await connect(token=token)
    assert connected


def session_cookie(user) -> bytes:
    browser = Client()
    browser.force_login(user)
    return f"sessionid={browser.cookies['sessionid'].value}".encode()


async def browser(connect, user, origin: bytes, host: bytes = b"127.0.0.1:6410"):
    """A page's WebSocket handshake: the session cookie, the page's Origin and the Host it called."""
    cookie = await database_sync_to_async(session_cookie)(user)
    return await connect(token=None, headers=[(b"cookie", cookie), (b"origin", origin), (b"host", host)])


async def test_it_accepts_an_admin_session(connect, operator):
    _, connected, _ = await browser(connect, operator, b"http://127.0.0.1:6410")
    assert connected


@pytest.mark.parametrize(
    "origin",
    [b"https://evil.example", b"http://127.0.0.1:9999", b"https://127.0.0.1:6410", b"http://localhost:6410"],
)
async def test_it_refuses_an_admin_session_from_another_origin(connect, operator, origin):
    """Scheme, host and port must all be the page's own, as Django's CSRF check requires."""
    _, connected, code = await browser(connect, operator, origin)
    assert (connected, code) == (False, consumers.CLOSE_UNAUTHORIZED)


@pytest.mark.parametrize(
    ("trusted", "origin"),
    [
        ("https://gaia.example", b"https://gaia.example"),
        ("https://*.example.org", b"https://ops.example.org"),
    ],
)
async def test_it_accepts_an_admin_session_from_a_trusted_origin(
    connect, operator, settings, trusted, origin
):
    settings.CSRF_TRUSTED_ORIGINS = [trusted]
    _, connected, _ = await browser(connect, operator, origin)
    assert connected


async def test_it_refuses_the_session_of_a_user_who_is_not_staff(connect, django_user_model):
    mallory = await database_sync_to_async(django_user_model.objects.create_user)(
        "mallory", password="x" * 12
    )
    cookie = await database_sync_to_async(session_cookie)(mallory)
    _, connected, _ = await connect(token=None, headers=[(b"cookie", cookie)])
    assert not connected


async def test_it_pushes_a_new_event_in_the_notification_shape(connect):
    socket, _, _ = await connect()
    event = await emit("test.ping", "GPU 0 granted to gaia-study", "by FIFO", data={"gpu": 0})
    pushed = await socket.receive_json_from(timeout=5)
    assert pushed["id"] == event.id
    assert pushed["notification_id"] == str(event.id)
    assert pushed["notification_type"] == pushed["type"] == "test.ping"
    assert (pushed["title"], pushed["message"], pushed["data"]) == (
        "GPU 0 granted to gaia-study",
        "by FIFO",
        {"gpu": 0},
    )
    assert pushed["timestamp"] == event.created_at.isoformat()
    assert pushed["severity"] == "info"


async def test_it_pushes_events_in_id_order(connect):
    socket, _, _ = await connect()
    made = [(await emit("lease.granted", f"grant {n}")).id for n in range(20)]
    assert [pushed["id"] for pushed in await receive_all(socket, 20)] == made


async def test_it_sends_events_written_by_another_process_without_a_wake_up(connect):
    socket, _, _ = await connect()
    # Another process writes the row and its announcement never reaches us: the relay's poll must.
    event = await database_sync_to_async(Event.objects.create)(
        type="worker.ping", title="from the worker", actor="worker", created_at="2026-01-01T00:00:00Z"
    )
    assert (await socket.receive_json_from(timeout=2))["id"] == event.id


async def test_it_replays_missed_events_then_continues_live_without_gap_or_duplicate(connect):
    seen = (await emit("test.ping", "seen before the disconnect")).id
    missed = [(await emit("test.ping", f"missed {n}")).id for n in range(5)]
    socket, _, _ = await connect(f"after={seen}")
    live = [(await emit("test.ping", f"live {n}")).id for n in range(5)]
    received = [pushed["id"] for pushed in await receive_all(socket, 10)]
    assert received == missed + live
    assert await socket.receive_nothing(timeout=0.3)


async def test_it_bounds_the_replay_to_the_most_recent_events(connect, notifications_config):
    notifications_config(replay_limit=3)
    ids = [(await emit("test.ping", f"old {n}")).id for n in range(6)]
    socket, _, _ = await connect("after=0")
    assert [pushed["id"] for pushed in await receive_all(socket, 3)] == ids[-3:]
    assert await socket.receive_nothing(timeout=0.3)


async def test_it_replays_from_the_database_when_behind_the_relays_memory(connect, monkeypatch):
    monkeypatch.setattr("notifications.hub.RING_SIZE", 2)
    first = await connect()
    first_socket = first[0]
    ids = [(await emit("test.ping", f"burst {n}")).id for n in range(8)]
    assert [p["id"] for p in await receive_all(first_socket, 8)] == ids
    late, _, _ = await connect(f"after={ids[0]}")
    assert [p["id"] for p in await receive_all(late, 7)] == ids[1:]


@pytest.mark.parametrize(
    ("types", "wanted"),
    [
        ("handoff.*", ["handoff.started", "handoff.completed"]),
        ("lease", ["lease.granted"]),
        ("lease.granted,notification.*", ["lease.granted", "notification.oracle_fallback"]),
    ],
)
async def test_it_sends_only_the_types_asked_for(connect, types, wanted):
    socket, _, _ = await connect(f"types={types}")
    for event_type in ["handoff.started", "lease.granted", "leases.other", "notification.oracle_fallback"]:
        await emit(event_type, event_type)
    await emit("handoff.completed", "done")
    received = [pushed["type"] for pushed in await receive_all(socket, len(wanted))]
    assert received == wanted
    assert await socket.receive_nothing(timeout=0.3)


async def test_it_explains_a_bad_after_and_closes(connect):
    socket, connected, _ = await connect("after=yesterday")
    assert connected
    error = await socket.receive_json_from(timeout=2)
    assert (error["error"], error["field"]) == ("invalid_request", "after")
    assert (await socket.receive_output(timeout=2))["code"] == consumers.CLOSE_BAD_REQUEST


async def test_it_drops_a_client_that_stops_reading_without_delaying_others(
    connect, notifications_config, monkeypatch
):
    notifications_config(client_queue_size=3, slow_client_timeout_seconds=0.2)
    stalled = consumers.TransportGauge()
    stalled.pauseProducing()  # what daphne does when the client's socket buffer is full
    gauges = iter([stalled, consumers.TransportGauge()])
    monkeypatch.setattr(consumers.TransportGauge, "attach", classmethod(lambda cls, send: next(gauges)))
    slow, _, _ = await connect()
    fast, _, _ = await connect()
    made = [(await emit("test.ping", f"n{n}")).id for n in range(10)]
    assert [p["id"] for p in await receive_all(fast, 10)] == made
    assert (await slow.receive_output(timeout=2)) == {
        "type": "websocket.close",
        "code": consumers.CLOSE_TOO_SLOW,
    }


async def test_it_announces_an_event_committed_inside_an_event_loop(connect):
    socket, _, _ = await connect()
    event = await emit("test.ping", "from a worker thread")
    dispatch.announce(event.id)  # called with a running loop: must schedule, not raise
    assert (await socket.receive_json_from(timeout=2))["id"] == event.id
    await asyncio.sleep(0.05)
    assert not dispatch._announcements


async def test_it_is_woken_by_a_writer_of_this_host_long_before_its_next_poll(
    connect, notifications_config, settings
):
    settings.CHANNEL_LAYERS = {}  # no channel layer: only the relay's wake-up socket can reach it
    notifications_config(relay_poll_ms=10_000)
    socket, _, _ = await connect()
    await asyncio.sleep(0.2)  # the relay's first read is done: it waits for a wake-up or its poll
    event = await database_sync_to_async(Event.objects.create)(
        type="worker.ping", title="written elsewhere", actor="worker", created_at="2026-01-01T00:00:00Z"
    )
    assert await socket.receive_nothing(timeout=0.3)  # no wake-up yet, and the next poll is 10 s away
    await asyncio.to_thread(dispatch.event_committed, event.id)  # what a worker does after commit
    assert (await socket.receive_json_from(timeout=2))["id"] == event.id


@pytest.mark.slow
@pytest.mark.redis
async def test_it_is_woken_through_redis_long_before_its_next_poll(connect, notifications_config, settings):
    settings.CHANNEL_LAYERS = channel_layers(fresh_redis())
    notifications_config(relay_poll_ms=10_000)
    socket, _, _ = await connect()
    event = await database_sync_to_async(Event.objects.create)(
        type="worker.ping", title="written elsewhere", actor="worker", created_at="2026-01-01T00:00:00Z"
    )
    assert await socket.receive_nothing(timeout=1)  # no wake-up yet, and the next poll is 10 s away
    await asyncio.to_thread(dispatch.announce, event.id)  # what the writing process does after commit
    assert (await socket.receive_json_from(timeout=2))["id"] == event.id


async def test_it_closes_the_stream_when_the_event_log_cannot_be_read(connect, monkeypatch):
    monkeypatch.setattr("notifications.hub.RING_SIZE", 0)  # every connection reads the database itself

    async def unreadable(*args):
        raise DatabaseError("the database is gone")

    monkeypatch.setattr(consumers, "read_items", unreadable)
    socket, _, _ = await connect()
    await emit("test.ping", "unreadable")
    assert (await socket.receive_output(timeout=3))["code"] == consumers.CLOSE_SERVER_ERROR


@pytest.fixture
def recheck_often(monkeypatch):
    monkeypatch.setattr(consumers, "RECHECK_SECONDS", 0.1)


async def assert_closed_unauthorized(socket) -> None:
    assert await socket.receive_output(timeout=3) == {
        "type": "websocket.close",
        "code": consumers.CLOSE_UNAUTHORIZED,
    }


async def test_it_closes_a_stream_once_its_token_is_rotated(connect, recheck_often):
    socket, _, _ = await connect("types=lease.*")  # not the rotation's own event (account.token_issued)
    assert await socket.receive_nothing(timeout=0.5)  # several re-checks pass while the token is good
    await database_sync_to_async(ensure_service_account)("gaia-web", rotate=True)
    await assert_closed_unauthorized(socket)


async def test_it_closes_a_stream_once_its_account_is_deactivated(connect, recheck_often, django_user_model):
    socket, _, _ = await connect()
    await database_sync_to_async(django_user_model.objects.filter(username="gaia-web").update)(
        is_active=False
    )
    await assert_closed_unauthorized(socket)


async def test_it_closes_an_admin_stream_once_the_session_logs_out(connect, operator, recheck_often):
    socket, connected, _ = await browser(connect, operator, b"http://127.0.0.1:6410")
    assert connected and await socket.receive_nothing(timeout=0.5)
    await database_sync_to_async(Session.objects.all().delete)()
    await assert_closed_unauthorized(socket)


async def test_it_closes_an_admin_stream_once_the_user_is_no_longer_staff(connect, operator, recheck_often):
    socket, connected, _ = await browser(connect, operator, b"http://127.0.0.1:6410")
    assert connected
    operator.is_staff = False
    await database_sync_to_async(operator.save)()
    await assert_closed_unauthorized(socket)


@pytest.mark.parametrize("credential", ["token", "session"])
async def test_it_refuses_the_handshake_cleanly_while_the_database_is_down(
    connect, operator, credential, request
):
    cookie = await database_sync_to_async(session_cookie)(operator)
    request.getfixturevalue("database_down")
    if credential == "token":
        socket, connected, _ = await connect()
    else:
        headers = [(b"cookie", cookie), (b"origin", b"http://127.0.0.1:6410"), (b"host", b"127.0.0.1:6410")]
        socket, connected, _ = await connect(token=None, headers=headers)
    assert connected
    assert (await socket.receive_json_from(timeout=2))["error"] == "database_unavailable"
    assert (await socket.receive_output(timeout=2))["code"] == consumers.CLOSE_SERVER_ERROR


@pytest.mark.slow
@pytest.mark.redis
async def test_it_keeps_an_idle_redis_consumer_waiting_past_its_blocking_pop():
    """A consumer with nothing to receive waits in blocking pops of the layer's brpop_timeout one
    after another; its socket must outwait each, or the idle WebSocket dies of a read timeout."""
    config = channel_layers(fresh_redis())["default"]["CONFIG"]
    layer = RedisChannelLayer(**config)
    assert config["hosts"][0]["socket_timeout"] > layer.brpop_timeout
    channel = await layer.new_channel()
    receiving = asyncio.create_task(layer.receive(channel))
    try:
        await asyncio.sleep(layer.brpop_timeout + 1)  # the first pop has ended empty; the next waits
        assert not receiving.done(), receiving
        await layer.send(channel, {"type": "event.new", "id": 1})
        assert (await asyncio.wait_for(receiving, timeout=5))["id"] == 1
    finally:
        receiving.cancel()
        await layer.flush()
