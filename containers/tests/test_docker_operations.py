"""Stack operations against the real Docker Engine (busybox services built locally)."""

from __future__ import annotations

import pytest

from containers import reality
from containers.models import Container, Operation
from containers.tests.conftest import RUN_ID, RUN_LABEL, STUBBORN_SERVICE
from leases import services as leases

pytestmark = [pytest.mark.slow, pytest.mark.docker]

LIVE_START_ORDER = ["t-mcp", "t-core", "t-web", "t-stubborn"]


def steps_of(operation_id: int, prefix: str) -> list[str]:
    operation = Operation.objects.get(pk=operation_id)
    return [step.service for step in operation.steps.all() if step.name.startswith(prefix)]


def test_it_starts_the_live_stack_dependencies_first_and_waits_for_health(
    docker_stack, operator_client, inspect
):
    response = operator_client.post("/containers/live/start")

    assert response.status_code == 202, response.json()
    operation_id = response.json()["operation_id"]
    detail = operator_client.get(f"/containers/operations/{operation_id}").json()
    assert detail["status"] == "succeeded", detail
    assert steps_of(operation_id, "start ") == LIVE_START_ORDER
    started = {name: inspect(docker_stack, name)["State"]["StartedAt"] for name in LIVE_START_ORDER}
    assert started["t-mcp"] < started["t-core"] < started["t-web"]
    health_steps = [s for s in detail["steps"] if s["name"].startswith("wait healthy t-core")]
    assert "answered 200" in health_steps[0]["detail"]
    states = {row.service: row.state for row in Container.objects.filter(stack="live")}
    assert states == dict.fromkeys(LIVE_START_ORDER, "running")


def test_it_stops_dependents_first_and_kills_a_service_that_ignores_sigterm(
    docker_stack, operator_client, inspect
):
    assert operator_client.post("/containers/live/start").status_code == 202
    leases.acquire(requester="t-core", reason="prime inference", actor="gaia-core")

    response = operator_client.post("/containers/live/stop")

    operation_id = response.json()["operation_id"]
    detail = operator_client.get(f"/containers/operations/{operation_id}").json()
    assert detail["status"] == "succeeded", detail
    assert steps_of(operation_id, "stop ") == ["t-stubborn", "t-web", "t-core", "t-mcp"]
    finished = {name: inspect(docker_stack, name)["State"]["FinishedAt"] for name in LIVE_START_ORDER}
    assert finished["t-web"] < finished["t-core"] < finished["t-mcp"]
    stubborn = next(step for step in detail["steps"] if step["name"] == "stop t-stubborn")
    assert stubborn["figures"]["killed"] is True
    assert stubborn["figures"]["exit_code"] == 137
    assert stubborn["figures"]["seconds"] >= 2
    assert "killed after the 2 s graceful timeout" in stubborn["detail"]
    web = next(step for step in detail["steps"] if step["name"] == "stop t-web")
    assert web["figures"]["exit_code"] == 0 and web["figures"]["killed"] is False
    assert leases.current_holder(0) is None  # the live stack's GPU lease went with it
    assert "released lease" in detail["steps"][-1]["detail"]
    reality.reconcile()
    status = operator_client.get("/containers/status").json()
    assert {entry["service"]: entry["state"] for entry in status["services"] if entry["stack"] == "live"} == (
        dict.fromkeys(LIVE_START_ORDER, "exited")
    )


def test_it_gives_back_the_candidates_gpu_lease_when_the_candidate_stack_stops(docker_stack, operator_client):
    assert operator_client.post("/containers/candidate/start", {}, format="json").status_code == 202
    leases.acquire(requester="t-core-candidate", reason="bicameral test", actor="olivia")

    response = operator_client.post("/containers/candidate/stop")

    detail = operator_client.get(response.json()["status_url"]).json()
    assert detail["status"] == "succeeded", detail
    assert [step["name"] for step in detail["steps"]] == [
        "stop t-core-candidate",
        "stop t-mcp-candidate",
        "release candidate GPU lease",
    ]
    assert leases.current_holder(0) is None


def test_it_never_stops_its_own_container_even_when_labels_point_at_it(
    docker_stack, settings, operator_client, docker_client, busybox_image
):
    own_name = docker_stack["orchestrator"]["own_container"]
    settings.GAIAORCH = {
        **docker_stack,
        "docker": {**docker_stack["docker"], "compose_project": "gaia-test"},
        "services": {"t-sidecar": {"stack": "live", "compose_service": "sidecar", "stop_timeout_seconds": 1}},
    }
    labels = {
        RUN_LABEL: RUN_ID,
        "com.docker.compose.project": "gaia-test",
        "com.docker.compose.service": "sidecar",
    }
    own = docker_client.containers.run(
        busybox_image, ["sh", "-c", STUBBORN_SERVICE], name=own_name, labels=labels, detach=True
    )

    response = operator_client.post("/containers/live/stop")

    detail = operator_client.get(response.json()["status_url"]).json()
    assert detail["status"] == "failed"
    assert f"{own_name} is the orchestrator's own container" in detail["error"]
    own.reload()
    assert own.status == "running"
