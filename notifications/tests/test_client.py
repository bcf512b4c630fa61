"""gaiaorch_client against a real HTTP server speaking the lease and handoff contract."""

import asyncio
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gaiaorch_client import (
    AsyncClient,
    Client,
    GaiaorchError,
    HandoffFailed,
    HandoffTimeout,
    LeaseTimeout,
)
from notifications.tests.fake_gaiaorch import FakeGaiaorch


@pytest.fixture
def orchestrator():
    with FakeGaiaorch() as fake:
        yield fake


@pytest.fixture
def study(orchestrator):
    """gaia-study's client."""
    with Client(orchestrator.url, token=orchestrator.token, requester="gaia-study") as client:
        yield client


@pytest.fixture
async def async_study(orchestrator):
    async with AsyncClient(orchestrator.url, token=orchestrator.token, requester="gaia-study") as client:
        yield client


def test_it_sends_the_token_of_the_environment_when_given_none(orchestrator, monkeypatch):
    monkeypatch.setenv("GAIAORCH_TOKEN", orchestrator.token)
    with Client(orchestrator.url, requester="gaia-study") as client, client.gpu("LoRA training") as lease:
        assert lease.granted


async def test_it_sends_the_token_of_the_environment_from_the_async_client_too(orchestrator, monkeypatch):
    monkeypatch.setenv("GAIAORCH_TOKEN", orchestrator.token)
    async with AsyncClient(orchestrator.url, requester="gaia-study") as client:
        assert await client.notify_oracle_fallback("groq/llama", "prime") is True


def test_it_sends_no_token_when_told_so_explicitly(orchestrator, monkeypatch):
    monkeypatch.setenv("GAIAORCH_TOKEN", orchestrator.token)
    with (
        Client(orchestrator.url, token="", requester="gaia-study") as client,
        pytest.raises(GaiaorchError) as refused,
    ):
        client.acquire("LoRA training")
    assert refused.value.status_code == 401


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_it_holds_a_free_gpu_heartbeats_and_releases_it(orchestrator, study):
    with study.gpu("LoRA training", heartbeat_seconds=0.05) as lease:
        assert lease.granted and lease.fencing_token == 1 and lease.gpu == 0
        time.sleep(0.3)
        assert orchestrator.holder == lease.lease_id
    assert len(orchestrator.heartbeats) >= 3
    assert orchestrator.released == [lease.lease_id] and orchestrator.holder is None
    assert orchestrator.requests[0][2] == {"requester": "gaia-study", "reason": "LoRA training"}


def test_it_waits_in_the_queue_until_the_holder_releases(orchestrator, study):
    core_lease = orchestrator.hold_gpu()
    orchestrator.release_later(core_lease, 0.3)
    with study.gpu("LoRA training", wait_seconds=10, gpu=0, priority=1) as lease:
        assert lease.granted and orchestrator.holder == lease.lease_id
    assert [path for _, path, _ in orchestrator.requests][:2] == ["/gpu/acquire", "/gpu/wait"]
    assert orchestrator.requests[0][2]["priority"] == 1


def test_it_withdraws_its_queue_entry_when_the_wait_times_out(orchestrator, study):
    orchestrator.hold_gpu()
    with pytest.raises(LeaseTimeout), study.gpu("LoRA training", wait_seconds=0.3):
        pytest.fail("the block must not run without the GPU")
    assert orchestrator.queue == [] and len(orchestrator.released) == 1


def test_it_releases_the_gpu_when_the_block_raises(orchestrator, study):
    with pytest.raises(RuntimeError), study.gpu("LoRA training"):
        raise RuntimeError("training crashed")
    assert orchestrator.holder is None


def test_it_acquires_and_releases_step_by_step(orchestrator, study):
    lease = study.acquire("warm-up", memory_mib=2048)
    assert lease.granted and orchestrator.requests[0][2]["memory_mib"] == 2048
    assert study.heartbeat(lease.lease_id)["success"]
    study.release(lease.lease_id)
    assert orchestrator.holder is None


def test_it_raises_the_servers_refusal_with_its_error_code(study):
    with pytest.raises(GaiaorchError) as refusal:
        study.release("lease-unknown")
    assert (refusal.value.status_code, refusal.value.error) == (404, "not_found")
    assert refusal.value.body["lease_id"] == "lease-unknown"


def test_it_runs_a_handoff_until_it_completes(orchestrator, study):
    status = study.handoff("prime-to-study", reason="nightly training", poll_seconds=0.01)
    assert status["phase"] == "completed"
    assert orchestrator.requests[0][1:] == ("/handoff/prime-to-study", {"reason": "nightly training"})


def test_it_raises_when_the_handoff_fails(orchestrator, study):
    orchestrator.handoff_outcome = "failed"
    with pytest.raises(HandoffFailed) as failure:
        study.handoff("study-to-prime", poll_seconds=0.01)
    assert failure.value.status["error"] == "cuda memory not freed"


def test_it_stops_waiting_for_a_handoff_after_the_timeout(study):
    started = study.start_handoff("prime-to-study")
    with pytest.raises(HandoffTimeout):
        study.wait_handoff(started["handoff_id"], timeout=0.05, poll_seconds=0.02)


def test_it_reports_an_oracle_fallback_quietly_when_the_orchestrator_is_down():
    with Client(f"http://127.0.0.1:{closed_port()}", token="t") as client:
        assert client.notify_oracle_fallback("groq/llama", "prime") is False


def test_it_gives_up_on_a_hanging_orchestrator_within_the_notice_timeout():
    with FakeGaiaorch(hang_seconds=3) as slow, Client(slow.url, token=slow.token) as client:
        started = time.monotonic()
        assert client.notify_oracle_fallback("groq/llama", "prime", timeout=0.3) is False
        assert time.monotonic() - started < 1.5


async def test_it_holds_a_gpu_from_async_code(orchestrator, async_study):
    core_lease = orchestrator.hold_gpu()
    orchestrator.release_later(core_lease, 0.2)
    async with async_study.gpu("LoRA training", heartbeat_seconds=0.05) as lease:
        assert lease.granted
        await asyncio.sleep(0.3)
    assert len(orchestrator.heartbeats) >= 3 and orchestrator.holder is None


async def test_it_withdraws_from_the_queue_from_async_code(orchestrator, async_study):
    orchestrator.hold_gpu()
    with pytest.raises(LeaseTimeout):
        async with async_study.gpu("LoRA training", wait_seconds=0.2):
            pytest.fail("the block must not run without the GPU")
    assert orchestrator.queue == []


async def test_it_runs_a_handoff_from_async_code(orchestrator, async_study):
    assert (await async_study.handoff(poll_seconds=0.01))["phase"] == "completed"


async def test_it_reports_an_oracle_fallback_from_async_code_without_raising(orchestrator, async_study):
    assert await async_study.notify_oracle_fallback("groq/llama", "prime", reason="asleep") is True
    async with AsyncClient(f"http://127.0.0.1:{closed_port()}") as down:
        assert await down.notify_oracle_fallback("groq/llama", "prime") is False


def test_it_shares_one_client_between_threads(orchestrator, study):
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(study.handoff(poll_seconds=0.01))) for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [status["phase"] for status in results] == ["completed"] * 4


async def test_it_withdraws_from_the_queue_when_the_waiting_task_is_cancelled(orchestrator, async_study):
    orchestrator.hold_gpu()

    async def train():
        async with async_study.gpu("LoRA training", wait_seconds=30):
            pytest.fail("the block must not run without the GPU")

    waiting = asyncio.create_task(train())
    await asyncio.sleep(0.3)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert orchestrator.queue == [] and len(orchestrator.released) == 1


def test_it_needs_nothing_but_httpx_and_the_standard_library():
    probe = (
        "import sys, gaiaorch_client; "
        "print(sorted(m for m in ('django', 'rest_framework', 'yaml') if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
