"""A handoff is never queued behind webhook deliveries: real worker and ticker processes, a hanging
receiver and a burst of events, on the embedded default (ORM broker) and on Redis."""

from __future__ import annotations

import time

import pytest

from console import services as console_services
from handoffs.models import Handoff
from handoffs.tests.processes import Process, environment, wait_for
from notifications.models import WebhookDelivery
from notifications.tests.receiver import WebhookReceiver
from notifications.tests.samples import record_sample

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

EVENTS = 120
WEBHOOK_TIMEOUT_SECONDS = 2
ATTEMPT_MARGIN_SECONDS = 1
PICKUP_PROMISE_SECONDS = 3  # the ORM broker is woken as the task is queued (else its poll); a worker is free
HEARTBEAT_MAX_AGE_SECONDS = 4


@pytest.fixture(params=["orm", pytest.param("redis", marks=pytest.mark.redis)])
def broker(request):
    """The broker the processes and this test share: the ORM (default) or the test Redis."""
    if request.param == "orm":
        return {}
    return {"REDIS_URL": request.getfixturevalue("task_broker").live_url}


@pytest.fixture
def processes(gaia, settings, tmp_path, broker):
    """Worker and ticker with a webhook whose receiver hangs far beyond its timeout."""
    receiver = WebhookReceiver(hang_seconds=30).__enter__()
    hook = {"name": "hanging", "url": receiver.url, "timeout_seconds": WEBHOOK_TIMEOUT_SECONDS}
    settings.GAIAORCH = {**settings.GAIAORCH, "notifications": {"webhooks": [hook]}}
    env = environment(tmp_path, settings.GAIAORCH, settings.FAKE_GPU_FILE)
    env.update(
        broker,
        GAIAORCH_WORKERS="2",
        GAIAORCH_WORKER_HEARTBEAT_INTERVAL="1",
        GAIAORCH_WORKER_HEARTBEAT_MAX_AGE=str(HEARTBEAT_MAX_AGE_SECONDS),
    )
    settings.WORKER_HEARTBEAT_MAX_AGE_SECONDS = HEARTBEAT_MAX_AGE_SECONDS
    started = [Process(env, name, log=tmp_path / f"{name}.log") for name in ("qcluster", "ticker")]
    yield
    for process in started:
        process.stop()
    receiver.server.shutdown()


def worker_check() -> dict:
    return console_services.readiness()["checks"]["worker"]


def test_it_picks_a_handoff_up_at_once_while_a_hanging_webhook_has_a_backlog(
    processes, hold_gpu, study_client
):
    wait_for(lambda: worker_check()["ok"], 60, "a first heartbeat consumed by the worker", interval=0.2)
    for n in range(EVENTS):
        record_sample("test.ping", f"burst event {n}")
    wait_for(lambda: WebhookDelivery.objects.filter(attempts__gt=0).exists(), 10, "a first webhook attempt")
    hold_gpu("gaia-core")
    accepted = time.monotonic()
    response = study_client.post("/handoff/prime-to-study")
    assert response.status_code == 202, response.content
    handoff_id = response.json()["handoff_id"]
    wait_for(
        lambda: (
            Handoff.objects.filter(pk=handoff_id).exclude(claimed_by="").exists()
            or Handoff.objects.get(pk=handoff_id).phase != "initiated"
        ),
        PICKUP_PROMISE_SECONDS,
        "a worker taking the handoff",
        interval=0.02,
    )
    picked_up = time.monotonic() - accepted
    stale = []
    until = time.monotonic() + 3 * HEARTBEAT_MAX_AGE_SECONDS
    while time.monotonic() < until:
        check = worker_check()
        if not check["ok"]:
            stale.append(check)
        time.sleep(0.5)
    assert stale == [], f"the worker heartbeat went stale behind the webhooks: {stale[:3]}"
    durations = [
        entry["duration_ms"]
        for log in WebhookDelivery.objects.values_list("attempt_log", flat=True)
        for entry in log
    ]
    assert durations, "the hanging webhook was attempted"
    assert max(durations) <= (WEBHOOK_TIMEOUT_SECONDS + ATTEMPT_MARGIN_SECONDS) * 1000
    assert WebhookDelivery.objects.filter(status="pending").count() > EVENTS / 2  # backlog was real
    print(f"handoff picked up {picked_up * 1000:.0f} ms after it was accepted")
