"""Readiness while another process holds SQLite's write lock (PostgreSQL has no such lock)."""

from __future__ import annotations

import sqlite3
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from console.tests.test_readiness import _checks
from containers.services import docker_reachable
from gaiaorch.models import WorkerHeartbeat


@pytest.mark.django_db(transaction=True)
def test_it_blames_a_locked_database_not_the_ticker(anonymous_client, fake_gpu, settings):
    """Another process holds SQLite's write lock, so the ticker could not stamp its heartbeats."""
    docker_reachable(reachable=True)
    late = timezone.now() - timedelta(seconds=settings.WORKER_HEARTBEAT_MAX_AGE_SECONDS + 5)
    WorkerHeartbeat.objects.update_or_create(pk=1, defaults={"enqueued_at": late, "consumed_at": late})
    writer = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        status, checks = _checks(anonymous_client)
        elapsed = time.monotonic() - started
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert status == 503
    assert checks["database"]["ok"] is False and "locked" in checks["database"]["detail"]
    assert "locked" in checks["worker"]["detail"] and "ticker" not in checks["worker"]["detail"]
    assert elapsed < 5  # the probe does not wait out the 30 s busy timeout
    assert _checks(anonymous_client)[1]["database"]["ok"] is True  # lock gone: writable again
