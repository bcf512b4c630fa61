"""Fixtures for the notifications tests: configuration overrides and WebSocket connections."""

from __future__ import annotations

import os

import pytest
import redis
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from console.asgi import application
from notifications.tests.samples import record_sample


@pytest.fixture
def notifications_config(settings):
    """Set keys of the `notifications:` YAML section for one test."""

    def configure(**values):
        section = {**settings.GAIAORCH.get("notifications", {}), **values}
        settings.GAIAORCH = {**settings.GAIAORCH, "notifications": section}

    configure(relay_poll_ms=20, webhooks=[])
    return configure


@pytest.fixture
def web_token(transactional_db, service_token) -> str:
    """The gaia-web service account, which listens to notifications."""
    return service_token("gaia-web")


@pytest.fixture
async def connect(web_token, notifications_config):
    """Open /ws/notifications; every connection is closed at the end of the test."""
    opened = []

    async def open_socket(query: str = "", token: str | None = web_token, headers=None):
        path = "/ws/notifications"
        params = "&".join(p for p in (f"token={token}" if token else "", query) if p)
        communicator = WebsocketCommunicator(application, f"{path}?{params}" if params else path, headers)
        connected, code = await communicator.connect(timeout=5)
        opened.append(communicator)
        return communicator, connected, code

    yield open_socket
    for communicator in opened:
        await communicator.disconnect()


emit = database_sync_to_async(record_sample)


async def receive_all(communicator, count: int, timeout: float = 5) -> list[dict]:
    return [await communicator.receive_json_from(timeout=timeout) for _ in range(count)]


def fresh_redis() -> str:
    """The test Redis database (REDIS_URL_TEST), emptied; fails with a hint when Redis is down."""
    url = os.environ.get("REDIS_URL_TEST", "redis://127.0.0.1:6379/15")
    try:
        redis.Redis.from_url(url).flushdb()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis at {url} is needed (start it: scripts/provision): {exc}")
    return url
