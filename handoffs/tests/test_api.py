import pytest

from handoffs import tasks
from handoffs.models import Handoff, Phase

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("body", [None, {}, {"reason": "train", "timeout_seconds": 30}])
def test_it_accepts_every_seed_body_shape(gaia, hold_gpu, study_client, body):
    hold_gpu("gaia-core")
    response = study_client.post("/handoff/prime-to-study", body, format="json" if body is not None else None)
    assert response.status_code == 202, response.json()
    answer = response.json()
    assert answer["status_url"] == f"/handoff/{answer['handoff_id']}/status"
    handoff = Handoff.objects.get(pk=answer["handoff_id"])
    assert handoff.requested_by == "gaia-study"
    if body:
        assert (handoff.reason, handoff.timeout_seconds) == ("train", 30)


def test_it_shows_the_seed_status_shape_with_the_phase_list(gaia, hold_gpu, study_client, anonymous_client):
    hold_gpu("gaia-core")
    handoff_id = study_client.post("/handoff/prime-to-study").json()["handoff_id"]
    tasks.run_handoff(handoff_id)
    status = anonymous_client.get(f"/handoff/{handoff_id}/status").json()
    assert status["handoff_id"] == handoff_id
    assert status["handoff_type"] == "prime_to_study"
    assert status["phase"] == "completed"
    assert status["progress_pct"] == 100
    assert (status["source"], status["destination"]) == ("gaia-core", "gaia-study")
    assert status["error"] is None
    assert status["started_at"] and status["completed_at"]
    assert [phase["name"] for phase in status["phases"]][-1] == "completed"
    assert {"name", "started_at", "finished_at", "outcome", "detail"} <= set(status["phases"][0])


def test_it_refuses_a_second_handoff_on_the_same_gpu_naming_the_first(
    gaia, hold_gpu, core_client, study_client
):
    hold_gpu("gaia-core")
    first = study_client.post("/handoff/prime-to-study").json()["handoff_id"]
    response = core_client.post("/handoff/study-to-prime")
    assert response.status_code == 409
    assert response.json()["error"] == "handoff_active"
    assert response.json()["active_handoff"] == first


def test_it_refuses_when_the_source_does_not_hold_the_gpu(gaia, hold_gpu, study_client):
    hold_gpu("gaia-study")
    response = study_client.post("/handoff/prime-to-study", {}, format="json")
    assert response.status_code == 409
    assert response.json()["error"] == "not_holder"
    assert response.json()["holder"] == "gaia-study"
    assert not Handoff.objects.exists()


def test_it_refuses_with_503_when_there_is_no_telemetry(gaia, hold_gpu, study_client, settings):
    hold_gpu("gaia-core")
    settings.GPU_BACKEND = "none"
    response = study_client.post("/handoff/prime-to-study")
    assert response.status_code == 503
    assert response.json()["error"] == "telemetry_unavailable"


def test_it_lets_only_the_parties_or_operators_start_a_handoff(gaia, hold_gpu, client_for, anonymous_client):
    hold_gpu("gaia-core")
    assert anonymous_client.post("/handoff/prime-to-study").status_code == 401
    response = client_for("gaia-web").post("/handoff/prime-to-study")
    assert response.status_code == 403
    assert response.json()["missing_right"] == "any_handoff"
    assert not Handoff.objects.exists()


def test_it_lets_a_service_granted_any_handoff_start_one_it_takes_no_part_in(
    gaia, hold_gpu, client_for, settings
):
    hold_gpu("gaia-core")
    settings.GAIAORCH = {**settings.GAIAORCH, "grants": {"scheduler": ["any_handoff"]}}
    assert client_for("scheduler").post("/handoff/prime-to-study").status_code == 202


def test_it_needs_the_stack_rights_of_a_handoff_that_stops_and_starts_stacks(
    gaia, hold_gpu, client_for, settings
):
    """live_to_candidate stops the live stack's GPU services and starts the candidate stack."""
    hold_gpu("gaia-core")
    candidate = client_for("gaia-core-candidate")
    start = {"type": "live_to_candidate", "reason": "trial"}
    refused = candidate.post("/api/handoffs/", start, format="json")
    assert refused.status_code == 403
    assert refused.json()["missing_right"] == "live_stop"
    settings.GAIAORCH = {**settings.GAIAORCH, "grants": {"gaia-core-candidate": ["live_stop"]}}
    assert candidate.post("/api/handoffs/", start, format="json").json()["missing_right"] == "candidate_start"
    settings.GAIAORCH = {
        **settings.GAIAORCH,
        "grants": {"gaia-core-candidate": ["live_stop", "candidate_start"]},
    }
    assert candidate.post("/api/handoffs/", start, format="json").status_code == 202


def test_it_creates_lists_shows_and_cancels_through_the_api(gaia, hold_gpu, operator_client):
    hold_gpu("gaia-core")
    created = operator_client.post("/api/handoffs/", {"type": "prime_to_study", "reason": "r"}, format="json")
    assert created.status_code == 202
    handoff_id = created.json()["handoff_id"]
    listed = operator_client.get("/api/handoffs/").json()
    assert [row["handoff_id"] for row in listed["results"]] == [handoff_id]
    detail = operator_client.get(f"/api/handoffs/{handoff_id}/").json()
    assert detail["phase"] == "initiated"
    assert detail["phases"][0]["name"] == "initiated"
    cancelled = operator_client.post(f"/api/handoffs/{handoff_id}/cancel/")
    assert cancelled.status_code == 202
    assert cancelled.json()["cancel_requested"] is True
    tasks.run_handoff(handoff_id)
    handoff = Handoff.objects.get(pk=handoff_id)
    assert handoff.phase == Phase.CANCELLED
    assert [record.name for record in handoff.phases.all()] == ["initiated", "rolling_back", "cancelled"]
    again = operator_client.post(f"/api/handoffs/{handoff_id}/cancel/")
    assert again.status_code == 409


def test_it_answers_404_for_an_unknown_handoff(anonymous_client, db):
    assert anonymous_client.get("/handoff/not-a-uuid/status").status_code == 404
    assert anonymous_client.get("/handoff/9b0c3a52-6e53-4a52-9a4b-8a2f3f0e1c11/status").status_code == 404


def test_it_rejects_an_unknown_type(operator_client, gaia):
    response = operator_client.post("/api/handoffs/", {"type": "prime_to_mars"}, format="json")
    assert response.status_code == 400
    assert "type" in response.json()["fields"]


def test_it_reports_the_running_handoff_for_the_seed_status_page(gaia, hold_gpu, study_client):
    from handoffs import services

    hold_gpu("gaia-core")
    assert services.active_status() is None
    handoff_id = study_client.post("/handoff/prime-to-study").json()["handoff_id"]
    assert services.active_status()["handoff_id"] == handoff_id
    tasks.run_handoff(handoff_id)
    assert services.active_status() is None
