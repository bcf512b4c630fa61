"""Seed handoff starts that wait for the handoff's end: ?wait=, Prefer: wait=N, the configured default."""

import asyncio

import pytest
from django.test import AsyncClient

from handoffs import services
from handoffs.models import Handoff, Phase

pytestmark = pytest.mark.django_db(transaction=True)


def start(client, query: str = "", **headers):
    return client.post(f"/handoff/prime-to-study{query}", headers=headers)


def test_it_answers_200_with_the_final_status_when_asked_to_wait(gaia, hold_gpu, worker, study_client):
    hold_gpu("gaia-core")
    response = start(study_client, "?wait=20")
    assert response.status_code == 200
    body = response.json()
    assert (body["success"], body["phase"], body["destination"]) == (True, "completed", "gaia-study")
    assert body["status_url"] == f"/handoff/{body['handoff_id']}/status"
    assert [phase["name"] for phase in body["phases"]][-1] == "completed"
    assert "completed" in body["message"]


def test_it_takes_the_wait_from_a_prefer_header(gaia, hold_gpu, worker, study_client):
    hold_gpu("gaia-core")
    response = start(study_client, Prefer="respond-async, wait=20")
    assert response.status_code == 200 and response.json()["phase"] == "completed"


def test_it_answers_202_with_the_status_url_when_the_wait_runs_out(gaia, hold_gpu, study_client):
    hold_gpu("gaia-core")  # no worker runs: the handoff stays initiated
    response = start(study_client, "?wait=0.3")
    assert response.status_code == 202
    body = response.json()
    assert response["Location"] == body["status_url"] == f"/handoff/{body['handoff_id']}/status"
    assert body["phase"] == "initiated" and "still initiated after 0.3 s" in body["message"]


def test_it_answers_502_with_the_handoffs_error_when_it_fails(gaia, hold_gpu, worker, study_client):
    hold_gpu("gaia-core")
    gaia["gaia-core"].respond("/gpu/release", status=500)
    response = start(study_client, "?wait=20")
    assert response.status_code == 502
    body = response.json()
    assert (body["error"], body["success"], body["handoff"]["phase"]) == ("handoff_failed", False, "failed")
    assert "gaia-core answered 500" in body["detail"]
    assert body["status_url"] == f"/handoff/{body['handoff_id']}/status"


def test_it_answers_409_when_the_handoff_is_cancelled_while_waiting(
    gaia, hold_gpu, worker, study_client, monkeypatch
):
    hold_gpu("gaia-core")
    enqueue = services.enqueue

    def cancel_then_run(handoff_id):
        services.cancel(handoff_id, actor="olivia", reason="not now")
        enqueue(handoff_id)

    monkeypatch.setattr(services, "enqueue", cancel_then_run)
    response = start(study_client, "?wait=20")
    assert response.status_code == 409
    assert (response.json()["error"], response.json()["handoff"]["phase"]) == (
        "handoff_cancelled",
        "cancelled",
    )


@pytest.mark.parametrize("wait", ["soon", "-1", "3601", "nan"])
def test_it_refuses_a_bad_wait_before_starting_anything(gaia, hold_gpu, study_client, wait):
    hold_gpu("gaia-core")
    response = start(study_client, f"?wait={wait}")
    assert response.status_code == 400 and "wait" in response.json()["fields"]
    assert not Handoff.objects.exists()


def test_it_waits_by_default_as_configured_unless_asked_not_to(
    gaia, hold_gpu, worker, study_client, configure
):
    configure("handoffs", default_wait_seconds=20)
    hold_gpu("gaia-core")
    assert start(study_client).status_code == 200
    back = study_client.post("/handoff/study-to-prime?wait=0")
    assert back.status_code == 202 and back.json()["phase"] == Phase.INITIATED


def test_it_answers_a_refusal_at_once_even_when_asked_to_wait(gaia, hold_gpu, study_client):
    hold_gpu("gaia-study")
    response = start(study_client, "?wait=600")
    assert response.status_code == 409 and response.json()["error"] == "not_holder"


async def test_it_serves_other_requests_while_a_start_waits(gaia, hold_gpu):
    from asgiref.sync import sync_to_async

    from gaiaorch.auth import ensure_service_account

    await sync_to_async(hold_gpu)("gaia-core")
    token = await sync_to_async(ensure_service_account)("gaia-study")
    client, headers = AsyncClient(), {"Authorization": f"Token {token}"}
    finished: list[str] = []

    async def waiting_start():
        response = await client.post(
            "/handoff/prime-to-study?wait=3", b"{}", content_type="application/json", headers=headers
        )  # no worker: waits it out
        finished.append(f"start {response.status_code}")

    async def status_read():
        await asyncio.sleep(0.5)
        for _ in range(3):  # sync views share one thread: each would queue behind a held one
            response = await client.get("/gpu/status", headers=headers)
            finished.append(f"status {response.status_code}")

    await asyncio.gather(waiting_start(), status_read())
    assert finished == ["status 200", "status 200", "status 200", "start 202"]
