"""POST /gpu/wait: the async long-poll."""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from gaiaorch.auth import ensure_service_account
from leases import services, wakeups
from leases.models import Lease, LeaseStatus

pytestmark = pytest.mark.django_db(transaction=True)


class TokenClient(AsyncClient):
    def __init__(self, token: str = ""):
        super().__init__()
        self.token_headers = {"Authorization": f"Token {token}"} if token else {}

    async def post(self, path, data=None, **kwargs):
        return await super().post(path, data, headers=self.token_headers, **kwargs)


async def client_for(name: str) -> TokenClient:
    return TokenClient(await sync_to_async(ensure_service_account)(name))  # type: ignore[arg-type]


async def wait(client: AsyncClient, **body):
    return await client.post("/gpu/wait", body, content_type="application/json")


async def hold(requester: str) -> Lease:
    result = await sync_to_async(services.acquire)(requester=requester, reason="holding", actor=requester)
    return result.lease


async def test_it_returns_at_once_when_the_gpu_is_free():
    study = await client_for("gaia-study")
    response = await wait(study, requester="gaia-study", reason="training", timeout_seconds=5)
    assert response.status_code == 200
    assert response.json()["success"] is True and response.json()["fencing_token"] == 1


async def test_it_returns_when_the_holder_releases():
    holder = await hold("gaia-core")
    study = await client_for("gaia-study")

    async def release_soon():
        await asyncio.sleep(0.3)
        await sync_to_async(services.release)(holder.id, actor="gaia-core")

    releaser = asyncio.create_task(release_soon())
    response = await wait(study, requester="gaia-study", reason="training", timeout_seconds=10)
    await releaser
    assert response.status_code == 200
    assert response.json()["fencing_token"] == 2


async def test_it_keeps_its_place_for_a_client_that_calls_again_after_a_timeout():
    await hold("gaia-core")
    study = await client_for("gaia-study")
    first = await wait(study, requester="gaia-study", reason="training", timeout_seconds=0.2)
    assert first.status_code == 202 and first.json()["queue_position"] == 1
    again = await wait(study, requester="gaia-study", reason="training", timeout_seconds=0.2)
    assert again.json()["lease_id"] == first.json()["lease_id"] and again.json()["queue_position"] == 1


async def test_it_keeps_the_entry_when_asked_and_reports_its_position():
    await hold("gaia-core")
    study = await client_for("gaia-study")
    body = {"requester": "gaia-study", "reason": "training", "timeout_seconds": 0.2, "keep_queued": True}
    response = await wait(study, **body)
    assert response.status_code == 202 and response.json()["queue_position"] == 1
    again = await wait(study, lease_id=response.json()["lease_id"], timeout_seconds=0.2)
    assert again.status_code == 202 and again.json()["status"] == "waiting"


async def test_it_keeps_an_entry_made_by_acquire_after_a_timeout():
    await hold("gaia-core")
    entry = await sync_to_async(services.acquire)(requester="gaia-study", reason="x", actor="gaia-study")
    study = await client_for("gaia-study")
    response = await wait(study, lease_id=str(entry.lease.id), timeout_seconds=0.2)
    assert response.status_code == 202 and response.json()["queue_position"] == 1


async def test_it_refuses_bad_input_and_missing_tokens():
    study = await client_for("gaia-study")
    assert (await wait(TokenClient(), requester="gaia-study", reason="x")).status_code == 401
    missing = await wait(study, reason="x")
    assert missing.status_code == 400 and "requester" in missing.json()["fields"]
    negative = await wait(study, requester="gaia-study", reason="x", timeout_seconds=-1)
    assert "timeout_seconds" in negative.json()["fields"]
    assert (await wait(study, requester="gaia-core", reason="x")).status_code == 403
    assert (await study.get("/gpu/wait")).status_code == 405
    huge = await study.post("/gpu/wait", "x" * (10 * 1024 * 1024), content_type="application/json")
    assert huge.status_code == 400 and huge.json()["error"] == "body_too_large"
    broken = await study.post("/gpu/wait", "[1]", content_type="application/json")
    assert broken.status_code == 400


async def test_it_answers_409_when_the_lease_is_revoked_during_the_wait():
    await hold("gaia-core")
    entry = await sync_to_async(services.acquire)(requester="gaia-study", reason="x", actor="gaia-study")

    async def revoke_soon():
        await asyncio.sleep(0.2)
        await sync_to_async(services.revoke)(entry.lease.id, actor="olivia", reason="not today")

    revoker = asyncio.create_task(revoke_soon())
    study = await client_for("gaia-study")
    response = await wait(study, lease_id=str(entry.lease.id), timeout_seconds=5)
    await revoker
    assert response.status_code == 409 and response.json()["status"] == "revoked"


async def test_it_wakes_the_waiter_on_commit_without_waiting_for_the_next_poll(monkeypatch):
    monkeypatch.setattr(wakeups, "POLL_SECONDS", 60)
    holder = await hold("gaia-core")
    entry = await sync_to_async(services.acquire)(requester="gaia-study", reason="x", actor="gaia-study")

    async def release_soon():
        await asyncio.sleep(0.2)
        await sync_to_async(services.release)(holder.id, actor="gaia-core")

    releaser = asyncio.create_task(release_soon())
    started = asyncio.get_running_loop().time()
    result = await services.wait(entry.lease.id, timeout_seconds=20)
    await releaser
    assert result.granted
    assert asyncio.get_running_loop().time() - started < 5


async def test_it_withdraws_its_own_entry_when_the_caller_hangs_up():
    await hold("gaia-core")
    entry = await sync_to_async(services.acquire)(requester="gaia-study", reason="x", actor="gaia-study")
    waiting = asyncio.create_task(
        services.wait_out(entry, timeout_seconds=30, keep_queued=False, actor="gaia-study")
    )
    await asyncio.sleep(0.2)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    lease = await Lease.objects.aget(pk=entry.lease.pk)
    assert lease.status == LeaseStatus.CANCELLED and lease.end_reason == services.GAVE_UP


async def test_it_sees_a_grant_committed_by_another_process_at_its_next_poll(monkeypatch):
    holder = await hold("gaia-core")
    entry = await sync_to_async(services.acquire)(requester="gaia-study", reason="x", actor="gaia-study")
    # Another process's decision: it sees no wait open, so its grant is to be claimed, and it
    # wakes none here; only the shared poller can see it.
    monkeypatch.setattr(services.WAITS, "is_open", lambda key: False)
    monkeypatch.setattr(services.WAITS, "notify", lambda *keys, handed=None: None)
    waiting = asyncio.create_task(services.wait(entry.lease.id, timeout_seconds=20))
    await asyncio.sleep(0.2)
    await sync_to_async(services.release)(holder.id, actor="gaia-core")
    started = asyncio.get_running_loop().time()
    result = await waiting
    assert result.granted and result.lease.claim_by is None
    assert asyncio.get_running_loop().time() - started < wakeups.POLL_SECONDS + 1


async def test_it_hands_a_grant_to_the_wait_open_here_claimed_in_the_decision_itself(monkeypatch):
    holder = await hold("gaia-core")
    entry = await sync_to_async(services.acquire)(requester="gaia-study", reason="x", actor="gaia-study")
    reads = []
    real_claim = services.claim
    monkeypatch.setattr(services, "claim", lambda lease_id: reads.append(lease_id) or real_claim(lease_id))
    waiting = asyncio.create_task(services.wait(entry.lease.id, timeout_seconds=20))
    await asyncio.sleep(0.2)
    assert len(reads) == 1  # the wait's first look, before it waits
    await sync_to_async(services.release)(holder.id, actor="gaia-core")
    result = await waiting
    assert result.granted and result.lease.fencing_token == 2
    assert len(reads) == 1  # answered with what the decision handed over: no read, no claim of its own
    granted = await Lease.objects.aget(pk=entry.lease.pk)
    assert granted.status == LeaseStatus.ACTIVE and granted.claim_by is None


async def test_it_leaves_a_grant_to_be_claimed_when_no_wait_is_open_here():
    holder = await hold("gaia-core")
    entry = await sync_to_async(services.acquire)(requester="gaia-study", reason="x", actor="gaia-study")
    await sync_to_async(services.release)(holder.id, actor="gaia-core")
    granted = await Lease.objects.aget(pk=entry.lease.pk)
    assert granted.status == LeaseStatus.ACTIVE and granted.claim_by is not None


async def test_it_gives_the_outcome_a_notification_hands_to_the_waits_of_that_lease_only():
    waits = wakeups.Waits(poll=lambda keys: [])
    with waits.listen("a") as first, waits.listen("b") as second:
        assert waits.is_open("a") and not waits.is_open("c")
        waits.notify("a", "b", handed={"a": "granted"})
        assert await first.wait(1) and await second.wait(1)
        assert first.take() == "granted" and first.take() is None
        assert second.take() is None
    assert not waits.is_open("a")
