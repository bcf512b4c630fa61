"""Unknown tenants: memory held by processes outside every service is an event once per
appearance, is shown in /gpu/status, /status and the dashboard, and is what a waiter waits for."""

from __future__ import annotations

import pytest

from handoffs import services
from handoffs.tests.fakes import GpuProcess
from leases import services as leases
from notifications.models import Event

pytestmark = pytest.mark.django_db


@pytest.fixture
def stranger(resident, gpu):
    """pid N, `python train.py`, takes 9.1 GiB of GPU 0 beside Prime."""
    process = GpuProcess("train.py")
    gpu.hold(process.pid, 9318)
    yield process
    process.stop()


TRAINING = "`python -c import time; time.sleep(600) train.py`"  # how a sentence quotes the stranger


def appeared() -> list[Event]:
    return list(Event.objects.filter(type="gpu.tenant_appeared"))


def test_it_records_a_tenant_once_per_appearance_not_per_sample(stranger, gpu, caplog):
    for _ in range(3):
        services.watch_tenants()
    (event,) = appeared()
    assert event.severity == "warning"
    assert event.data == {"gpu": 0, "pid": stranger.pid, "command": event.data["command"], "used_mib": 9318}
    assert event.data["command"].endswith("train.py")
    assert any(f"pid {stranger.pid}" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)
    gpu.hold(stranger.pid, 0)
    services.watch_tenants()
    assert Event.objects.filter(type="gpu.tenant_gone", data__pid=stranger.pid).count() == 1
    gpu.hold(stranger.pid, 2000)
    services.watch_tenants()
    assert len(appeared()) == 2  # a new appearance


def test_it_calls_no_service_process_a_tenant(resident):
    services.watch_tenants()
    assert appeared() == []


def test_it_shows_tenants_and_owners_in_gpu_status(stranger, resident, anonymous_client):
    status = anonymous_client.get("/gpu/status").json()
    memory = status["gpus"][0]["memory"]
    assert memory["by_service_mb"] == {"gaia-prime": 11000}
    assert (memory["unattributed_mb"], memory["reserved_mb"], memory["attribution_available"]) == (
        9318,
        615,
        True,
    )
    (tenant,) = status["gpus"][0]["tenants"]
    assert (tenant["pid"], tenant["used_mib"]) == (stranger.pid, 9318)
    assert (
        tenant["describe"]
        == f"9.1 GiB held by pid {stranger.pid} `python -c import time; time.sleep(600) train.py`"
    )
    assert status["tenants"] == status["gpus"][0]["tenants"]  # the seed's top level is GPU 0


def test_it_names_the_tenant_in_status_problems_and_on_the_dashboard(
    stranger, anonymous_client, admin_client
):
    problems = anonymous_client.get("/status").json()["problems"]
    assert f"GPU 0: 9.1 GiB held by pid {stranger.pid} {TRAINING}, outside any service" in problems
    cards = admin_client.get("/admin/dashboard/gpus").content.decode()
    assert f"9.1 GiB held by pid {stranger.pid}" in cards and "outside any service" in cards
    assert "11000 MiB" in cards and "615 MiB reserved by the driver" in cards


def test_it_says_who_holds_the_memory_a_waiter_waits_for(stranger, resident):
    result = leases.acquire(requester="gaia-study", reason="train", memory_mib=16384, actor="gaia-study")
    assert not result.granted
    assert result.waiting_for.startswith("16384 MiB free needed, 3643 MiB free on GPU 0: ")
    assert "10.7 GiB held by gaia-prime (pid" in result.waiting_for
    assert f"9.1 GiB held by pid {stranger.pid} {TRAINING}, outside any lease" in (result.waiting_for)
