import json

import pytest

from leases import services
from leases.models import Lease
from notifications.models import Event

pytestmark = pytest.mark.django_db


def acquire(client, requester, **body):
    return client.post("/gpu/acquire", {"requester": requester, "reason": "work", **body}, format="json")


def test_it_grants_with_the_seed_shape(core_client):
    response = acquire(core_client, "gaia-core", ttl_seconds=60)
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True and body["fencing_token"] == 1 and body["gpu"] == 0
    assert body["expires_at"] and body["lease_id"] and body["message"]


def test_it_queues_with_202_and_a_position(core_client, study_client):
    acquire(core_client, "gaia-core")
    response = acquire(study_client, "gaia-study")
    assert response.status_code == 202
    body = response.json()
    assert body == {
        "success": False,
        "lease_id": body["lease_id"],
        "gpu": 0,
        "requester": "gaia-study",
        "status": "waiting",
        "queue_position": 1,
        "waiting_for": "GPU 0 is held by gaia-core",
        "message": body["message"],
    }


def test_it_releases_by_body_or_query_and_grants_the_next_waiter(core_client, study_client):
    held = acquire(core_client, "gaia-core").json()["lease_id"]
    waiting = acquire(study_client, "gaia-study").json()["lease_id"]
    response = core_client.post(f"/gpu/release?lease_id={held}")
    assert response.status_code == 200
    assert response.json()["status"] == "released" and response.json()["next_holder"] == "gaia-study"
    response = study_client.post("/gpu/release", {"lease_id": waiting}, format="json")
    assert response.status_code == 200


def test_it_lets_a_service_release_its_own_lease_without_an_id(core_client, study_client):
    acquire(core_client, "gaia-core")
    waiting = acquire(study_client, "gaia-study").json()["lease_id"]
    response = core_client.post("/gpu/release", {"reason": "done"}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert (body["success"], body["status"], body["requester"]) == (True, "released", "gaia-core")
    assert (body["next_holder"], body["queue_length"]) == ("gaia-study", 0)
    assert Lease.objects.get(pk=waiting).status == "active"
    assert Event.objects.filter(type="lease.released").get().message == "done"


def test_it_withdraws_a_services_own_queue_entry_without_an_id(core_client, study_client):
    acquire(core_client, "gaia-core")
    acquire(study_client, "gaia-study")
    response = study_client.post("/gpu/release")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert Lease.objects.active().get().requester == "gaia-core"


def test_it_lets_an_operator_release_the_holder_with_the_reason_in_the_event(core_client, operator_client):
    acquire(core_client, "gaia-core")
    response = operator_client.post("/gpu/release?gpu=0", {"reason": "wedged"}, format="json")
    assert response.status_code == 200
    assert (response.json()["requester"], response.json()["status"]) == ("gaia-core", "released")
    event = Event.objects.filter(type="lease.released").get()
    assert (event.actor, event.message) == ("olivia", "wedged")


def test_it_says_nothing_was_released_when_nothing_is_held(core_client, study_client, operator_client):
    assert operator_client.post("/gpu/release").json()["error"] == "nothing_held"
    acquire(core_client, "gaia-core")
    response = study_client.post("/gpu/release", {}, format="json")
    assert response.status_code == 409
    body = response.json()
    assert (body["success"], body["holder"], body["gpu"], body["queue_length"]) == (False, "gaia-core", 0, 0)
    assert body["message"] == body["detail"]
    assert Lease.objects.active().get().requester == "gaia-core"
    assert not Event.objects.filter(type="lease.released").exists()


def test_it_asks_which_gpu_when_a_release_without_an_id_is_ambiguous(two_gpus, core_client, operator_client):
    acquire(core_client, "gaia-core", gpu=0)
    acquire(core_client, "gaia-core", gpu=1)
    for client in (core_client, operator_client):
        response = client.post("/gpu/release")
        assert response.status_code == 400 and "gpu" in response.json()["fields"]
    assert core_client.post("/gpu/release", {"gpu": 1}, format="json").json()["gpu"] == 1
    assert core_client.post("/gpu/release").json()["gpu"] == 0  # now its only lease
    assert Lease.objects.active().count() == 0


def test_it_refuses_a_lease_id_on_another_gpu_than_named(two_gpus, core_client):
    held = acquire(core_client, "gaia-core", gpu=1).json()["lease_id"]
    response = core_client.post("/gpu/release", {"lease_id": held, "gpu": 0}, format="json")
    assert response.status_code == 400 and "gpu" in response.json()["fields"]
    assert Lease.objects.active().count() == 1


def test_it_answers_404_for_an_unknown_and_409_for_an_ended_lease(core_client):
    unknown = core_client.post(
        "/gpu/release", {"lease_id": "00000000-0000-0000-0000-000000000001"}, format="json"
    )
    assert unknown.status_code == 404 and unknown.json()["error"] == "not_found"
    held = acquire(core_client, "gaia-core").json()["lease_id"]
    core_client.post("/gpu/release", {"lease_id": held}, format="json")
    again = core_client.post("/gpu/release", {"lease_id": held}, format="json")
    assert again.status_code == 409 and again.json()["status"] == "released"


def test_it_lets_a_service_act_only_for_itself(core_client, study_client, operator_client):
    assert acquire(study_client, "gaia-core").status_code == 403
    held = acquire(core_client, "gaia-core").json()["lease_id"]
    stolen = study_client.post("/gpu/release", {"lease_id": held}, format="json")
    assert stolen.status_code == 403 and stolen.json()["error"] == "forbidden"
    assert operator_client.post("/gpu/release", {"lease_id": held}, format="json").status_code == 200


def test_it_needs_a_token_for_writes_but_not_for_status(anonymous_client):
    response = acquire(anonymous_client, "gaia-core")
    assert response.status_code == 401 and response.json()["error"] == "not_authenticated"
    assert anonymous_client.get("/gpu/status").status_code == 200


@pytest.mark.parametrize(
    "body, field",
    [
        ({"reason": "x"}, "requester"),
        ({"requester": "gaia-core"}, "reason"),
        ({"requester": "mallory", "reason": "x"}, "requester"),
        ({"requester": "gaia-core", "reason": "x", "gpu": "zero"}, "gpu"),
        ({"requester": "gaia-core", "reason": "x", "gpu": 9}, "gpu"),
        ({"requester": "gaia-core", "reason": "x", "ttl_seconds": -5}, "ttl_seconds"),
        ({"requester": "gaia-core", "reason": "x", "priority": [1]}, "priority"),
        ({"requester": "gaia-core", "reason": "x", "memory_mib": 0}, "memory_mib"),
        ({"requester": 42, "reason": {"a": 1}}, "reason"),
    ],
)
def test_it_answers_400_with_field_errors_for_bad_input(operator_client, body, field):
    response = operator_client.post("/gpu/acquire", body, format="json")
    assert response.status_code == 400
    assert field in response.json()["fields"]
    assert Lease.objects.count() == 0


def test_it_answers_400_for_a_ten_megabyte_body(core_client):
    body = json.dumps({"requester": "gaia-core", "reason": "x" * (10 * 1024 * 1024)})
    for path in ("/gpu/acquire", "/gpu/release", "/gpu/heartbeat"):
        response = core_client.post(path, body, content_type="application/json")
        assert response.status_code == 400
        assert response.json()["error"] == "body_too_large" and "body" in response.json()["fields"]


def test_it_answers_400_for_malformed_json(core_client):
    response = core_client.post("/gpu/acquire", "{not json", content_type="application/json")
    assert response.status_code == 400 and response.json()["error"] == "malformed_request"


def test_it_renews_on_heartbeat(core_client):
    held = acquire(core_client, "gaia-core", ttl_seconds=30).json()["lease_id"]
    response = core_client.post("/gpu/heartbeat", {"lease_id": held}, format="json")
    assert response.status_code == 200 and response.json()["expires_at"]
    assert not Event.objects.filter(type="lease.heartbeat").exists()


def test_it_shows_status_with_holder_queue_and_memory(core_client, study_client, fake_gpus):
    acquire(core_client, "gaia-core", reason="prime inference")
    acquire(study_client, "gaia-study", reason="lora training", gpu=0)
    status = core_client.get("/gpu/status").json()
    assert status["owner"] == "gaia-core" and status["reason"] == "prime inference"
    assert status["fencing_token"] == 1 and status["telemetry_available"] is True
    memory = status["memory"]
    assert (memory["total_mb"], memory["used_mb"], memory["free_mb"], memory["reserved_mb"]) == (
        24576,
        512,
        24064,
        None,
    )
    assert (memory["by_service_mb"], memory["attribution_available"]) == (
        {},
        False,
    )  # v1 file, no process list
    assert status["queue"][0]["position"] == 1 and status["queue"][0]["requester"] == "gaia-study"
    assert [gpu["gpu"] for gpu in status["gpus"]] == [0, 1]
    one = core_client.get("/gpu/status?gpu=1").json()
    assert one["owner"] == "none" and "baseline_mb" not in one["memory"]  # no idle baseline is measured
    assert status["gpus"][1]["owner"] == "none"


def test_it_keeps_null_for_a_free_gpus_owner_under_api(core_client, fake_gpus):
    acquire(core_client, "gaia-core", gpu=1)
    status = core_client.get("/api/gpu/status/").json()
    assert (status["owner"], status["gpus"][1]["owner"]) == (None, "gaia-core")
    assert core_client.get("/api/gpu/status/?gpu=1").json()["owner"] == "gaia-core"
    assert core_client.get("/api/gpu/status/?gpu=7").status_code == 404


def test_it_reports_telemetry_failure_without_failing(core_client, settings):
    settings.GPU_BACKEND = "fake"
    settings.FAKE_GPU_FILE = "/nonexistent/gpus.json"
    status = core_client.get("/gpu/status").json()
    assert status["telemetry_available"] is False and "does not exist" in status["telemetry_reason"]


def test_it_lists_and_filters_leases(core_client, study_client):
    acquire(core_client, "gaia-core")
    acquire(study_client, "gaia-study")
    waiting = core_client.get("/api/leases/?status=waiting").json()["results"]
    assert [lease["requester"] for lease in waiting] == ["gaia-study"]
    assert core_client.get("/api/leases/?requester=gaia-core").json()["count"] == 1
    assert core_client.get("/api/leases/?status=bogus").status_code == 400


def test_it_runs_lease_actions_with_the_right_permissions(core_client, study_client, operator_client):
    held = acquire(core_client, "gaia-core").json()["lease_id"]
    waiting = acquire(study_client, "gaia-study").json()["lease_id"]
    assert core_client.post(f"/api/leases/{held}/heartbeat/").status_code == 200
    assert core_client.post(f"/api/leases/{held}/revoke/", {"reason": "x"}, format="json").status_code == 403
    assert operator_client.post(f"/api/leases/{held}/revoke/", {}, format="json").status_code == 400
    revoked = operator_client.post(f"/api/leases/{held}/revoke/", {"reason": "stuck"}, format="json")
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    assert core_client.get(f"/api/leases/{waiting}/").json()["status"] == "active"
    assert study_client.post(f"/api/leases/{waiting}/cancel/").status_code == 409
    assert study_client.post(f"/api/leases/{waiting}/release/").json()["status"] == "released"
    assert core_client.get("/api/leases/not-a-uuid/").status_code == 404


def test_it_writes_one_event_per_transition(core_client, study_client):
    held = acquire(core_client, "gaia-core").json()["lease_id"]
    acquire(study_client, "gaia-study")
    core_client.post("/gpu/release", {"lease_id": held}, format="json")
    lease_events = Event.objects.filter(type__startswith="lease.").order_by("id")
    events = list(lease_events.values_list("type", "actor", "subject_id"))
    assert [(kind, actor) for kind, actor, _ in events] == [
        ("lease.requested", "gaia-core"),
        ("lease.granted", "gaia-core"),
        ("lease.requested", "gaia-study"),
        ("lease.released", "gaia-core"),
        ("lease.granted", "gaia-core"),
    ]
    assert events[0][2] == held
    assert services.current_holder(0).requester == "gaia-study"
