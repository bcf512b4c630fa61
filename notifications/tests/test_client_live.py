"""gaiaorch_client against the real gaiaorch server (daphne + ticker), as a GAIA service uses it."""

import threading
import time

import httpx
import pytest

from gaiaorch_client import AsyncClient, Client, GaiaorchError, LeaseTimeout
from notifications.tests.stack import Stack

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def server(tmp_path):
    stack = Stack(tmp_path).start("web", "ticker")
    try:
        yield stack
    finally:
        stack.stop()


def client_of(server: Stack, requester: str) -> Client:
    token = server.manage("service_account", requester).strip()
    return Client(server.url, token=token, requester=requester)


def gpu_status(server: Stack) -> dict:
    return httpx.get(f"{server.url}/gpu/status", timeout=5).json()


def test_it_waits_for_the_gpu_holds_it_with_heartbeats_and_releases_it(server):
    core, study = client_of(server, "gaia-core"), client_of(server, "gaia-study")
    core_lease = core.acquire("prime inference")
    assert core_lease.granted
    held: dict = {}

    def train():
        with study.gpu("LoRA training", wait_seconds=20, heartbeat_seconds=0.2, ttl_seconds=1) as lease:
            held["lease"] = lease
            time.sleep(2.5)  # longer than the TTL: only the heartbeats keep the lease alive
            held["holder_while_training"] = gpu_status(server)["owner"]

    trainer = threading.Thread(target=train)
    trainer.start()
    time.sleep(0.5)
    assert gpu_status(server)["queue"][0]["requester"] == "gaia-study"
    core.release(core_lease.lease_id)
    trainer.join(timeout=30)

    assert held["lease"].fencing_token > core_lease.fencing_token
    assert held["holder_while_training"] == "gaia-study"
    after = gpu_status(server)
    assert after["owner"] == "none" and after["queue"] == []


def test_it_gives_up_waiting_without_leaving_a_queue_entry(server):
    core, study = client_of(server, "gaia-core"), client_of(server, "gaia-study")
    core.acquire("prime inference")
    with pytest.raises(LeaseTimeout), study.gpu("LoRA training", wait_seconds=1):
        pass
    assert gpu_status(server)["queue"] == []


async def test_it_sends_an_oracle_fallback_notice_that_users_see(server):
    token = server.manage("service_account", "gaia-core").strip()
    async with AsyncClient(server.url, token=token, requester="gaia-core") as core:
        assert await core.notify_oracle_fallback("groq/llama-70b", "prime", reason="Prime is asleep")
    events = server.wait_for_events(0, 1)
    notice = next(e for e in events if e["type"] == "notification.oracle_fallback")
    assert notice["data"]["fallback_model"] == "groq/llama-70b"


def test_it_asks_for_any_gpu_that_fits_its_memory_need(tmp_path):
    """gpu="any" through the client: the real server chooses by the fake backend's free memory."""
    from gaiaorch import telemetry

    fake_file = tmp_path / "gpus.json"
    gib, total = 1024, 80 * 1024
    telemetry.write_fake(
        fake_file,
        [
            {"index": 0, "uuid": "GPU-live-0", "total_mib": total, "used_mib": total - 12 * gib},
            {"index": 1, "uuid": "GPU-live-1", "total_mib": total, "used_mib": total - 70 * gib},
        ],
    )
    env = {"GAIAORCH_GPU_BACKEND": "fake", "GAIAORCH_FAKE_GPU_FILE": str(fake_file)}
    (tmp_path / "var").mkdir()
    stack = Stack(tmp_path / "var", env=env)
    stack.start("web")
    try:
        study = client_of(stack, "gaia-study")
        with study.gpu("LoRA training", wait_seconds=5, gpu="any", memory_mib=40 * gib) as lease:
            assert lease.granted and lease.gpu == 1
            assert lease.body["choice"].startswith("GPU 1: the best fit for 40.0 GiB (70.0 GiB free)")
        with pytest.raises(GaiaorchError) as refused:
            study.acquire("LoRA training", gpu="any", memory_mib=100 * gib)
        assert refused.value.status_code == 400 and "memory_mib" in refused.value.body["fields"]
    finally:
        stack.stop()
