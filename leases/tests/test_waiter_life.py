"""The life of a waiting entry, and of a grant nobody is there to take (docs/leases.md, "Waiting").

An entry lives while a wait is open on it, while its owner shows signs of life (a heartbeat, a
repeated acquire, a new wait), and for a grace period after the last one. A grant to an entry
nobody is there to take is claimed within the claim window, or passed on to the next waiter.
"""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from asgiref.testing import ApplicationCommunicator
from django.utils import timezone

from gaiaorch.auth import ensure_service_account
from leases import services
from leases.models import Lease, LeaseStatus
from notifications.models import Event

GRACE = 30
CLAIM = 10


@pytest.fixture(autouse=True)
def short_lives(configure_leases):
    configure_leases(waiter_grace_seconds=GRACE, claim_window_seconds=CLAIM)


def acquire(requester, **options):
    return services.acquire(requester=requester, reason=f"{requester} work", actor=requester, **options)


def overdue(lease: Lease) -> None:
    Lease.objects.filter(pk=lease.pk).update(expires_at=timezone.now() - timedelta(seconds=1))


def seconds_left(lease: Lease) -> float:
    lease.refresh_from_db()
    return (lease.expires_at - timezone.now()).total_seconds()  # type: ignore[operator]


# --- a waiting entry lives for the grace period after its last sign of life ---------------------


@pytest.mark.django_db
def test_it_gives_a_waiting_entry_without_a_ttl_the_grace_period_and_then_ends_it():
    acquire("gaia-core")
    entry = acquire("gaia-study").lease
    assert GRACE - 2 < seconds_left(entry) <= GRACE
    overdue(entry)
    services.reap()
    entry.refresh_from_db()
    assert entry.status == LeaseStatus.EXPIRED
    assert "no sign of life" in entry.end_reason
    assert Event.objects.filter(type="lease.expired", subject_id=str(entry.id)).exists()


@pytest.mark.django_db
def test_it_renews_a_waiting_entry_on_each_sign_of_life():
    acquire("gaia-core")
    entry = acquire("gaia-study").lease
    for sign_of_life in (
        lambda: acquire("gaia-study"),
        lambda: services.heartbeat(entry.id, actor="gaia-study"),
    ):
        Lease.objects.filter(pk=entry.pk).update(expires_at=timezone.now() + timedelta(seconds=1))
        sign_of_life()
        assert seconds_left(entry) > GRACE - 2
    assert entry.status == LeaseStatus.WAITING


@pytest.mark.django_db
def test_it_keeps_a_waiting_entry_with_a_ttl_for_that_ttl():
    acquire("gaia-core")
    entry = acquire("gaia-study", ttl_seconds=300).lease
    assert 298 < seconds_left(entry) <= 300


# --- a grant must be claimed ----------------------------------------------------------------------


@pytest.mark.django_db
def test_it_passes_on_a_grant_nobody_claims_within_the_claim_window():
    holder = acquire("gaia-core").lease
    ghost = acquire("gaia-study").lease
    alive = acquire("gaia-core-candidate").lease
    services.release(holder.id, actor="gaia-core")
    ghost.refresh_from_db()
    assert ghost.status == LeaseStatus.ACTIVE and ghost.claim_by is not None
    assert CLAIM - 2 < seconds_left(ghost) <= CLAIM
    overdue(ghost)
    services.reap()
    ghost.refresh_from_db()
    assert ghost.status == LeaseStatus.EXPIRED and "not claimed" in ghost.end_reason
    passed_on = Event.objects.get(type="lease.unclaimed")
    assert passed_on.subject_id == str(ghost.id) and passed_on.severity == "warning"
    assert services.current_holder(0).id == alive.id


@pytest.mark.django_db
@pytest.mark.parametrize("claim", ["acquire", "heartbeat"])
def test_it_keeps_a_grant_its_requester_claims(claim):
    holder = acquire("gaia-core").lease
    entry = acquire("gaia-study").lease
    services.release(holder.id, actor="gaia-core")
    if claim == "acquire":
        assert acquire("gaia-study").granted
    else:
        services.heartbeat(entry.id, actor="gaia-study")
    entry.refresh_from_db()
    assert entry.claim_by is None and entry.expires_at is None  # no TTL: held until released
    services.reap()
    assert services.current_holder(0).id == entry.id


@pytest.mark.django_db
def test_it_never_asks_the_caller_of_an_immediate_grant_to_claim_it():
    lease = acquire("gaia-study").lease
    assert lease.claim_by is None and lease.expires_at is None


# --- /gpu/wait ------------------------------------------------------------------------------------

transactional = pytest.mark.django_db(transaction=True)


class Http:
    """One request to the ASGI application, able to hang up like a client that goes away."""

    def __init__(self, token: str, body: dict):
        from console.asgi import application

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/gpu/wait",
            "raw_path": b"/gpu/wait",
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"127.0.0.1"),
                (b"content-type", b"application/json"),
                (b"authorization", f"Token {token}".encode()),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 6410),
        }
        self.app = ApplicationCommunicator(application, scope)
        self.body = json.dumps(body).encode()

    async def send(self) -> None:
        await self.app.send_input({"type": "http.request", "body": self.body, "more_body": False})

    async def answer(self, timeout: float = 10) -> tuple[int, dict]:
        start = await self.app.receive_output(timeout)
        content = await self.app.receive_output(timeout)
        return start["status"], json.loads(content["body"])

    async def hang_up(self) -> None:
        await self.app.send_input({"type": "http.disconnect"})
        await self.app.wait(10)


async def token_of(name: str) -> str:
    return await sync_to_async(ensure_service_account)(name, rotate=True)  # type: ignore[return-value]


async def hold(requester: str) -> Lease:
    return (await sync_to_async(acquire)(requester)).lease


async def status_of(lease_id) -> str:
    return (await Lease.objects.aget(pk=lease_id)).status


@transactional
async def test_it_answers_a_timed_out_wait_with_the_entrys_position_and_keeps_it():
    await hold("gaia-core")
    request = Http(
        await token_of("gaia-study"), {"requester": "gaia-study", "reason": "x", "timeout_seconds": 0.3}
    )
    await request.send()
    status, body = await request.answer()
    assert status == 202 and body["status"] == "waiting" and body["queue_position"] == 1
    assert "still number 1 in the queue" in body["message"]
    assert await status_of(body["lease_id"]) == LeaseStatus.WAITING


@transactional
async def test_it_withdraws_the_entry_of_a_caller_that_hangs_up():
    await hold("gaia-core")
    request = Http(
        await token_of("gaia-study"), {"requester": "gaia-study", "reason": "x", "timeout_seconds": 30}
    )
    await request.send()
    entry = await wait_for_entry("gaia-study")
    await request.hang_up()
    assert await status_of(entry.id) == LeaseStatus.CANCELLED


@transactional
async def test_it_withdraws_an_entry_whose_caller_hung_up_while_it_was_being_made(monkeypatch):
    await hold("gaia-core")
    hung_up = threading.Event()
    real_acquire = services.acquire

    def slow_acquire(**options):
        result = real_acquire(**options)
        hung_up.wait(5)  # the caller goes away before the entry is handed to the wait
        return result

    monkeypatch.setattr(services, "acquire", slow_acquire)
    request = Http(
        await token_of("gaia-study"), {"requester": "gaia-study", "reason": "x", "timeout_seconds": 30}
    )
    await request.send()
    entry = await wait_for_entry("gaia-study")
    await request.app.send_input({"type": "http.disconnect"})
    await asyncio.sleep(0.2)
    hung_up.set()
    await request.app.wait(10)
    assert await status_of(entry.id) == LeaseStatus.CANCELLED


@transactional
async def test_it_lets_a_later_acquire_keep_an_entry_a_hung_up_wait_made():
    """The zombie wait: its caller gave up on it and asked again; the new answer must hold."""
    await hold("gaia-core")
    request = Http(
        await token_of("gaia-study"), {"requester": "gaia-study", "reason": "x", "timeout_seconds": 30}
    )
    await request.send()
    entry = await wait_for_entry("gaia-study")
    again = await sync_to_async(acquire)("gaia-study")
    assert again.lease.id == entry.id and again.queue_position == 1  # confirmed with 202
    await request.hang_up()
    assert await status_of(entry.id) == LeaseStatus.WAITING


async def granted_during_a_wait() -> Http:
    """gaia-study's wait, open when gaia-core releases GPU 0 to it."""
    holder = await hold("gaia-core")
    request = Http(
        await token_of("gaia-study"), {"requester": "gaia-study", "reason": "x", "timeout_seconds": 30}
    )
    await request.send()
    await wait_for_entry("gaia-study")
    await sync_to_async(services.release)(holder.id, actor="gaia-core")
    return request


@transactional
async def test_it_claims_the_grant_it_returns():
    request = await granted_during_a_wait()
    status, body = await request.answer()
    assert status == 200
    granted = await Lease.objects.aget(pk=body["lease_id"])
    assert granted.status == LeaseStatus.ACTIVE and granted.claim_by is None


async def wait_for_entry(requester: str) -> Lease:
    for _ in range(200):
        entry = await Lease.objects.filter(requester=requester, status=LeaseStatus.WAITING).afirst()
        if entry is not None:
            await asyncio.sleep(0.1)  # the wait itself is under way
            return entry
        await asyncio.sleep(0.02)
    raise AssertionError(f"{requester} never queued")


@transactional
async def test_it_answers_a_grant_that_came_during_the_wait_through_every_middleware():
    """The answer took the middleware's response steps when the wait began (DeferredAnswer)."""
    request = await granted_during_a_wait()
    start = await request.app.receive_output(10)
    content = await request.app.receive_output(10)
    headers = {name.decode().lower(): value.decode() for name, value in start["headers"]}
    assert start["status"] == 200 and json.loads(content["body"])["fencing_token"] == 2
    assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"
    assert headers["content-type"] == "application/json"
    assert headers["content-length"] == str(len(content["body"]))  # measured again after the wait
