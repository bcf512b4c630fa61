"""Shared test fixtures: personas, API clients, and the split between SQLite and PostgreSQL runs.

The bulk of the suite runs on SQLite. Tests marked `postgres` need the real PostgreSQL server and
run in a second pass with DATABASE_URL set (scripts/test does both passes).
"""

from __future__ import annotations

from unittest import mock

import pytest
from django.conf import settings
from django.db import OperationalError, connection
from django.db.backends.base.base import BaseDatabaseWrapper
from rest_framework.test import APIClient

from gaiaorch.auth import ensure_service_account
from notifications.tests import samples  # noqa: F401 (declares the test event types)


def pytest_collection_modifyitems(config, items):
    on_postgres = connection.vendor == "postgresql"
    keep, drop = [], []
    for item in items:
        wants_postgres = item.get_closest_marker("postgres") is not None
        (keep if wants_postgres == on_postgres else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix, tmp_path_factory):
    """The SQLite test database is a file in WAL mode, as in production. Django's default, shared-cache
    memory, takes table locks that fail a concurrent reader (a relay thread, an async view's thread)
    at once instead of letting it read beside the writer."""
    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("sqlite3"):
        database.setdefault("TEST", {})["NAME"] = str(tmp_path_factory.mktemp("sqlite") / "test.sqlite3")


@pytest.fixture(scope="session", autouse=True)
def gpus_start_free():
    """The suite's GPUs start free: the shipped configuration seats gaia-core on GPU 0 as its
    resident, and most tests describe lease rules on a GPU nobody holds. Tests of residents name
    one (leases/tests/conftest.py `resident`); leases/tests/test_resident.py reads the shipped file."""
    shipped = settings.GAIAORCH
    settings.GAIAORCH = {**shipped, "leases": {**(shipped.get("leases") or {}), "residents": {}}}
    yield
    settings.GAIAORCH = shipped


def client_for_token(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


@pytest.fixture
def operator(django_user_model):
    """Olivia, the on-call operator: a staff user who may act on anything."""
    return django_user_model.objects.create_user("olivia", password="not-a-real-password", is_staff=True)


@pytest.fixture
def operator_client(operator) -> APIClient:
    client = APIClient()
    client.force_authenticate(operator)
    return client


@pytest.fixture
def service_token():
    """service_token(name): the API key of a service account, made once per test (a key is shown
    only when it is issued, so every fixture of one test shares it)."""
    keys: dict[str, str] = {}

    def token(name: str) -> str:
        if name not in keys:
            keys[name] = ensure_service_account(name, rotate=True)  # type: ignore[assignment]
        return keys[name]

    return token


@pytest.fixture
def study_client(db, service_token) -> APIClient:
    """The gaia-study service account, authenticated by its real token."""
    return client_for_token(service_token("gaia-study"))


@pytest.fixture
def core_client(db, service_token) -> APIClient:
    """The gaia-core service account, authenticated by its real token."""
    return client_for_token(service_token("gaia-core"))


@pytest.fixture
def anonymous_client() -> APIClient:
    return APIClient()


@pytest.fixture
def database_down():
    """Every query, on every thread, fails as it does when the database server is gone."""

    def refuse(self):
        raise OperationalError("connection refused: the database server is down")

    with mock.patch.object(BaseDatabaseWrapper, "ensure_connection", refuse):
        yield


@pytest.fixture
def task_broker(monkeypatch):
    """django-q2 on the test Redis (REDIS_URL_TEST) for one test; `point_at` moves it elsewhere.

    `dead_url` is a port where nothing listens (Redis stopped); `silent_url` accepts connections
    and never answers (Redis hung, or a network that drops packets).
    """
    import socket

    from django_q.brokers import get_broker
    from django_q.conf import Conf

    from gaiaorch.settings import redis_with_timeouts
    from notifications.tests.conftest import fresh_redis

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # the kernel completes handshakes; nobody ever reads or answers
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        dead_port = unused.getsockname()[1]

    class Broker:
        live_url = fresh_redis()
        dead_url = f"redis://127.0.0.1:{dead_port}/0"
        silent_url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"

        def point_at(self, url: str) -> None:
            monkeypatch.setattr(Conf, "REDIS", redis_with_timeouts(url))

        def queued(self) -> int:
            return get_broker().queue_size()

    monkeypatch.setattr(Conf, "ORM", None)
    monkeypatch.setattr(Conf, "BROKER_CLASS", None)  # the ORM broker's (gaiaorch.brokers)
    broker = Broker()
    broker.point_at(broker.live_url)
    yield broker
    silent.close()


@pytest.fixture(scope="session", autouse=True)
def serving_threads_let_go(django_db_setup, django_db_blocker):
    """The serving pool's threads keep their connections between requests (gaiaorch.serving): close
    them before the test database is dropped (PostgreSQL refuses to drop a database in use)."""
    yield
    from gaiaorch import serving

    serving.close_connections()
