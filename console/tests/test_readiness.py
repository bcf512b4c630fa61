from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from containers.services import docker_reachable
from gaiaorch import services, telemetry
from gaiaorch.models import WorkerHeartbeat


def _checks(client) -> tuple[int, dict]:
    response = client.get("/ready")
    return response.status_code, response.json()["checks"]


def test_it_is_ready_when_every_part_works(anonymous_client, everything_up):
    response = anonymous_client.get("/ready")
    assert response.status_code == 200
    assert response.json()["ready"] is True
    checks = response.json()["checks"]
    assert set(checks) == {"database", "worker", "docker", "telemetry", "rollbacks"}
    assert checks["worker"]["heartbeat_age_seconds"] < 5
    assert checks["telemetry"]["backend"] == "fake"


def test_it_warns_while_tokenless_writes_are_accepted_and_stays_ready(
    anonymous_client, everything_up, settings
):
    assert anonymous_client.get("/ready").json()["warnings"] == []
    orchestrator = {**settings.GAIAORCH["orchestrator"], "trusted_networks": ["172.18.0.0/16"]}
    settings.GAIAORCH = {**settings.GAIAORCH, "orchestrator": orchestrator}
    response = anonymous_client.get("/ready")
    assert response.status_code == 200 and response.json()["ready"] is True
    [warning] = response.json()["warnings"]
    assert "without a token" in warning and "172.18.0.0/16" in warning


def test_it_blames_the_ticker_when_no_heartbeat_was_ever_enqueued(anonymous_client, fake_gpu, db):
    docker_reachable(reachable=True)
    status, checks = _checks(anonymous_client)
    assert status == 503
    assert checks["worker"]["ok"] is False
    assert "manage.py ticker" in checks["worker"]["detail"]
    assert checks["docker"]["ok"] is True


def test_it_blames_the_worker_when_heartbeats_are_not_consumed(anonymous_client, everything_up, settings):
    old = timezone.now() - timedelta(seconds=settings.WORKER_HEARTBEAT_MAX_AGE_SECONDS + 1)
    WorkerHeartbeat.objects.filter(pk=1).update(consumed_at=old, enqueued_at=timezone.now())
    status, checks = _checks(anonymous_client)
    assert status == 503
    assert "manage.py qcluster" in checks["worker"]["detail"]
    assert checks["worker"]["heartbeat_age_seconds"] > settings.WORKER_HEARTBEAT_MAX_AGE_SECONDS


def test_it_is_not_ready_without_docker(anonymous_client, everything_up):
    docker_reachable(reachable=False, error="connection refused")
    status, checks = _checks(anonymous_client)
    assert status == 503
    assert checks["docker"] == {"ok": False, "detail": "connection refused"}


def test_it_is_not_ready_when_configured_telemetry_fails(anonymous_client, everything_up, fake_gpu):
    fake_gpu.unlink()
    status, checks = _checks(anonymous_client)
    assert status == 503
    assert "does not exist" in checks["telemetry"]["detail"]


def test_it_accepts_telemetry_that_is_switched_off(anonymous_client, everything_up, settings):
    settings.GPU_BACKEND = "none"
    status, checks = _checks(anonymous_client)
    assert status == 200
    assert checks["telemetry"]["ok"] is True and checks["telemetry"]["backend"] == "none"


# Makes this connection read-only (a read-only file, a standby server), and back.
READ_ONLY = {
    "sqlite": ("PRAGMA query_only = ON", "PRAGMA query_only = OFF"),
    "postgresql": (
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
    ),
}


@pytest.mark.django_db(transaction=True)
def test_it_is_not_ready_while_the_database_refuses_writes(anonymous_client, fake_gpu):
    docker_reachable(reachable=True)
    services.stamp_worker_heartbeat()
    on, off = READ_ONLY[connection.vendor]
    with connection.cursor() as cursor:
        cursor.execute(on)
    try:
        status, checks = _checks(anonymous_client)
    finally:
        with connection.cursor() as cursor:
            cursor.execute(off)
    assert status == 503
    assert checks["database"]["ok"] is False
    assert "read-only" in checks["database"]["detail"]


def test_it_is_ready_with_telemetry_off_when_auto_finds_no_nvml(
    anonymous_client, everything_up, settings, monkeypatch
):
    settings.GPU_BACKEND = "auto"
    reason = "NVML did not initialise: NVML Shared Library Not Found"
    monkeypatch.setattr(
        telemetry.Nvml, "unavailable_reason", classmethod(lambda cls, retry_after_seconds=0: reason)
    )
    status, checks = _checks(anonymous_client)
    assert status == 200
    assert checks["telemetry"] == {
        "ok": True,
        "detail": f"telemetry is off: GPU backend auto found no NVML ({reason})",
        "backend": "none",
        "configured_backend": "auto",
        "gpus": 0,
    }


def test_it_says_when_it_cannot_tell_who_holds_the_gpu_memory(anonymous_client, everything_up):
    status, checks = _checks(anonymous_client)  # the fake file lists no process for 512 MiB in use
    assert status == 200 and checks["telemetry"]["ok"] is True
    assert checks["telemetry"]["detail"].startswith(
        "samples GPU memory; attribution unavailable: 512 MiB in use"
    )
    assert checks["telemetry"]["attribution"]["0"]["available"] is False
