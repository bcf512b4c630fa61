"""Real processes: daphne, the django-q2 worker and the ticker, with real WebSocket and HTTP clients."""

import asyncio
import base64
import json
import os
import socket
import time

import pytest
import websockets

from gaiaorch_client import AsyncClient
from notifications.tests.conftest import fresh_redis
from notifications.tests.receiver import WebhookReceiver
from notifications.tests.stack import Stack, ensure_postgres_database

pytestmark = pytest.mark.slow


@pytest.fixture
def stack_of(tmp_path):
    started = []

    def start(*names, notifications=None, env=None):
        stack = Stack(tmp_path, notifications, env).start(*names)
        started.append(stack)
        return stack

    yield start
    for stack in started:
        stack.stop()


async def next_message(socket, seconds: float = 15) -> dict:
    return json.loads(await asyncio.wait_for(socket.recv(), seconds))


async def read_messages(socket, count: int) -> list[dict]:
    return [await next_message(socket, 60) for _ in range(count)]


async def nothing_more(socket, seconds: float = 0.5) -> bool:
    try:
        await asyncio.wait_for(socket.recv(), seconds)
    except TimeoutError:
        return True
    return False


async def make_in_worker(stack: Stack, title: str, count: int = 1) -> None:
    await asyncio.to_thread(
        stack.manage, "notify", "event", "manual.event", title, "--count", str(count), "--via-worker"
    )


async def worker_events_reach_clients_and_replay_after_reconnect(stack: Stack) -> None:
    async with websockets.connect(stack.ws_url()) as socket:
        await make_in_worker(stack, "made in the worker")
        first = await next_message(socket)
    assert (first["notification_type"], first["title"], first["actor"]) == (
        "manual.event",
        "made in the worker",
        "worker",
    )

    await make_in_worker(stack, "missed", count=3)
    missed = await asyncio.to_thread(stack.wait_for_events, first["id"], 3)
    async with websockets.connect(stack.ws_url(f"after={first['id']}")) as socket:
        replayed = [await next_message(socket) for _ in range(3)]
        await make_in_worker(stack, "live after the replay")
        live = await next_message(socket)
        assert await nothing_more(socket)
    assert [m["id"] for m in replayed] == [e["id"] for e in missed]
    assert live["title"] == "live after the replay" and live["id"] > replayed[-1]["id"]


async def test_it_sends_worker_events_to_clients_and_replays_after_a_reconnect_on_the_embedded_default(
    stack_of,
):
    stack = stack_of("web", "worker")
    await worker_events_reach_clients_and_replay_after_reconnect(stack)


@pytest.mark.postgres
@pytest.mark.redis
async def test_it_sends_worker_events_to_clients_and_replays_after_a_reconnect_on_postgresql_and_redis(
    stack_of,
):
    database_url, redis_url = os.environ["DATABASE_URL_TEST"], fresh_redis()
    ensure_postgres_database(database_url)
    stack = stack_of("web", "worker", env={"DATABASE_URL": database_url, "REDIS_URL": redis_url})
    await worker_events_reach_clients_and_replay_after_reconnect(stack)


async def test_it_refuses_a_websocket_without_a_token(stack_of):
    stack = stack_of("web")
    with pytest.raises(websockets.InvalidStatus) as refusal:
        await websockets.connect(f"ws://127.0.0.1:{stack.port}/ws/notifications")
    assert refusal.value.response.status_code == 403


async def test_it_broadcasts_an_oracle_fallback_burst_once_then_the_tickers_summary(stack_of):
    stack = stack_of("web", "ticker", notifications={"oracle_dedup_window_seconds": 2})
    core_token = stack.manage("service_account", "gaia-core", "--rotate").strip()  # granted oracle_fallback
    async with (
        websockets.connect(stack.ws_url("types=notification.*")) as socket,
        AsyncClient(stack.url, token=core_token) as gaia_core,
    ):
        for reason in ["prime asleep", "still asleep", "asleep again"]:
            assert await gaia_core.notify_oracle_fallback("groq/llama-3.3-70b", "prime", reason=reason)
        notice = await next_message(socket)
        summary = await next_message(socket, 10)  # recorded by the ticker process when the window ends
        assert await nothing_more(socket)
    assert notice["notification_type"] == summary["notification_type"] == "oracle_fallback"
    assert notice["type"] == summary["type"] == "notification.oracle_fallback"
    assert (notice["data"]["count"], notice["data"]["summary"]) == (1, False)
    assert (summary["data"]["count"], summary["data"]["summary"]) == (3, True)
    assert summary["data"]["first_event_id"] == notice["id"]
    assert summary["data"]["reason"] == "asleep again"


def stalled_socket(stack: Stack) -> socket.socket:
    """A WebSocket client that completes the handshake and then never reads (tiny receive buffer)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sock.connect(("127.0.0.1", stack.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /ws/notifications?token={stack.token} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert b" 101 " in head.split(b"\r\n")[0], head
    return sock


def read_until_closed(sock: socket.socket, seconds: float) -> int:
    """Bytes the server sent before it closed the connection; fails if it never closes it."""
    sock.settimeout(seconds)
    total = 0
    try:
        while chunk := sock.recv(65536):
            total += len(chunk)
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"the server kept the stalled client after sending {total} bytes") from None
    return total


async def test_it_drops_a_client_that_stops_reading_while_another_gets_everything(stack_of):
    stack = stack_of("web", notifications={"client_queue_size": 20, "slow_client_timeout_seconds": 1})
    count, pad = 500, 40_000
    stalled = await asyncio.to_thread(stalled_socket, stack)
    async with websockets.connect(stack.ws_url(), max_size=None) as reader:
        making = asyncio.to_thread(
            stack.manage, "notify", "event", "bulk", "--count", str(count), "--pad", str(pad)
        )
        received, _ = await asyncio.gather(read_messages(reader, count), making)
        assert [m["title"] for m in received] == [f"bulk {n}/{count}" for n in range(1, count + 1)]
        await asyncio.sleep(2)  # the stalled client stays stalled longer than slow_client_timeout_seconds
    sent_to_stalled = await asyncio.to_thread(read_until_closed, stalled, 10)
    assert sent_to_stalled < count * pad / 2


def test_it_retries_a_failing_webhook_until_it_takes_the_event_once(stack_of, tmp_path):
    with WebhookReceiver([500, 503]) as gaia_web, WebhookReceiver(hang_seconds=30) as dead:
        hooks = [
            {"name": "dead", "url": dead.url, "types": ["manual.event"], "timeout_seconds": 0.5},
            {"name": "gaia-web", "url": gaia_web.url, "types": ["manual.event"], "timeout_seconds": 2},
        ]
        stack = stack_of("worker", "ticker", notifications={"webhooks": hooks, "retry_base_seconds": 0.2})
        event_id = int(stack.manage("notify", "event", "manual.event", "for gaia-web"))
        [accepted] = gaia_web.wait_for(1, seconds=30)
        time.sleep(1.0)  # time for a duplicate to show up, if there were one
        assert accepted["id"] == event_id
        assert [r["status"] for r in gaia_web.requests] == [500, 503, 200]
        delivery = stack.query(
            "import json; from notifications.models import WebhookDelivery as D; "
            "d = D.objects.get(webhook='gaia-web'); "
            "print(json.dumps([d.status, d.attempts, len(d.attempt_log)]))"
        )
        assert delivery == ["delivered", 3, 3]
