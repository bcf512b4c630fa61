"""The container endpoints without Docker work: refusals, status from the database, GPU checks."""

from datetime import timedelta

import pytest
from django.db import IntegrityError
from django.utils import timezone

from containers import services
from containers.models import Container, DockerStatus, Operation, State
from containers.tests.conftest import stack_config
from leases import services as leases
from notifications.models import Event

pytestmark = pytest.mark.django_db


@pytest.fixture
def test_stack(settings):
    settings.GAIAORCH = stack_config("busybox", network="gaia-test-net")
    settings.DOCKER_URL = "unix:///nonexistent/docker.sock"
    return settings.GAIAORCH


@pytest.fixture
def docker_answers(monkeypatch, test_stack):
    """Docker 'answers the ping'; the queued operations are only recorded, not run."""
    queued = []
    monkeypatch.setattr(services, "require_docker", lambda: services.docker_reachable(reachable=True))
    monkeypatch.setattr(services, "enqueue", queued.append)
    return queued


def running_row(service: str, stack: str = "live", **fields) -> Container:
    return Container.objects.create(service=service, stack=stack, role=service, state=State.RUNNING, **fields)


def test_it_answers_503_for_operations_when_docker_is_unreachable(test_stack, operator_client):
    for path in ["/containers/live/stop", "/containers/live/start", "/containers/candidate/stop"]:
        response = operator_client.post(path)
        assert response.status_code == 503
        assert response.json()["error"] == "docker_unavailable"
        assert "/nonexistent/docker.sock" in response.json()["detail"]
    assert not Operation.objects.exists()


def test_it_never_shows_a_stale_running_state_when_docker_is_unreachable(test_stack, operator_client):
    running_row("t-core")
    DockerStatus.objects.create(pk=1, available=True, checked_at=timezone.now())

    assert operator_client.post("/containers/live/stop").status_code == 503

    status = operator_client.get("/containers/status").json()
    assert status["docker_available"] is False
    assert status["live"]["core"]["state"] == "unknown"
    assert Container.objects.get(service="t-core").state == "unknown"
    assert Event.objects.filter(type="docker.unavailable").count() == 1
    changed = Event.objects.get(type="container.state_changed", subject_id="t-core")
    assert changed.data["from"]["state"] == "running"


def test_it_says_unknown_when_nobody_has_checked_docker_lately(test_stack, anonymous_client):
    running_row("t-core")
    DockerStatus.objects.create(pk=1, available=True, checked_at=timezone.now() - timedelta(minutes=5))

    status = anonymous_client.get("/containers/status").json()

    assert status["docker_available"] is False
    assert "is the ticker" in status["docker_error"]
    assert status["live"]["core"]["state"] == "unknown"


def test_it_serves_the_status_from_the_database(test_stack, anonymous_client, django_assert_max_num_queries):
    running_row("t-core", health="healthy", image="busybox", container_id="c0ffee")
    DockerStatus.objects.create(pk=1, available=True, checked_at=timezone.now())

    with django_assert_max_num_queries(4):
        status = anonymous_client.get("/containers/status").json()

    assert status["docker_available"] is True
    core = next(entry for entry in status["services"] if entry["service"] == "t-core")
    assert core["health"] == "healthy" and core["container_id"] == "c0ffee"
    assert status["live"]["core"] == {
        "name": "t-core",
        "state": "running",
        "port": core["port"],
        "healthy": True,
        "last_check": core["last_seen_at"],
    }
    assert status["candidate"]["core"]["state"] == "unknown"  # never observed yet
    assert status["candidate"]["core"]["healthy"] is False


def test_it_keeps_the_role_to_state_maps_under_api(test_stack, anonymous_client):
    running_row("t-core", health="healthy")
    DockerStatus.objects.create(pk=1, available=True, checked_at=timezone.now())
    status = anonymous_client.get("/api/containers/status/").json()
    assert (status["live"]["core"], status["candidate"]["core"]) == ("running", "unknown")
    assert [entry["service"] for entry in status["services"]] == [
        entry["service"] for entry in anonymous_client.get("/containers/status").json()["services"]
    ]


@pytest.mark.parametrize(
    "docker_state, seed_state",
    [("running", "running"), ("exited", "stopped"), ("absent", "stopped"), ("restarting", "starting")],
)
def test_it_names_docker_states_as_the_seed_did(test_stack, anonymous_client, docker_state, seed_state):
    Container.objects.create(service="t-core", stack="live", state=docker_state, health="healthy")
    DockerStatus.objects.create(pk=1, available=True, checked_at=timezone.now())
    entry = anonymous_client.get("/containers/status").json()["live"]["core"]
    assert (entry["state"], entry["healthy"]) == (seed_state, docker_state == "running")


def test_it_queues_an_operation_and_answers_202_with_its_status_url(docker_answers, operator_client):
    response = operator_client.post("/containers/live/stop")

    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "pending"
    assert body["status_url"] == f"/containers/operations/{body['operation_id']}"
    assert body["services"] == ["t-stubborn", "t-web", "t-core", "t-mcp"]
    assert response["Location"] == body["status_url"]
    detail = operator_client.get(body["status_url"]).json()
    assert detail["kind"] == "live_stop" and detail["requested_by"] == "olivia"


def test_it_refuses_a_second_operation_naming_the_running_one(docker_answers, operator_client):
    first = operator_client.post("/containers/live/stop").json()

    response = operator_client.post("/containers/candidate/start", {}, format="json")

    assert response.status_code == 409
    assert response.json()["error"] == "operation_in_progress"
    assert response.json()["operation_id"] == first["operation_id"]
    assert response.json()["operation_kind"] == "live_stop"


def test_it_enforces_one_active_operation_in_the_database(db):
    Operation.objects.create(kind="live_stop", requested_by="olivia")

    with pytest.raises(IntegrityError):
        Operation.objects.create(kind="live_start", requested_by="olivia")


def test_it_refuses_writes_without_credentials(docker_answers, anonymous_client):
    assert anonymous_client.post("/containers/live/stop").status_code == 401


def test_it_answers_404_for_an_unknown_operation(anonymous_client, db):
    response = anonymous_client.get("/containers/operations/999")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


@pytest.mark.parametrize(
    ("body", "field"),
    [({"service": "t-nope"}, "service"), ({"service": "t-core", "target": "sideways"}, "target")],
)
def test_it_refuses_a_swap_of_an_unknown_service_or_target(docker_answers, operator_client, body, field):
    response = operator_client.post("/containers/swap", body, format="json")

    assert response.status_code == 400
    assert field in response.json()["fields"]


def test_it_refuses_a_gpu_start_that_does_not_fit_the_measured_free_memory(
    docker_answers, operator_client, fake_gpu
):
    fake_gpu(total_mib=24576, used_mib=20000)
    running_row("t-core", device_requests=[{"Driver": "nvidia", "DeviceIDs": ["0"]}])
    leases.acquire(requester="t-core", reason="prime inference", actor="gaia-core")

    response = operator_client.post("/containers/candidate/start", {"gpu_enabled": True}, format="json")

    assert response.status_code == 409
    body = response.json()
    assert body["error"] == "insufficient_vram"
    assert (body["need_mib"], body["free_mib"]) == (6144, 4576)
    assert body["holder"] == "t-core"
    assert not Operation.objects.exists()


def test_it_needs_the_full_declaration_of_a_service_running_without_the_gpu(
    docker_answers, operator_client, fake_gpu
):
    fake_gpu(total_mib=24576, used_mib=20000)
    running_row("t-core-candidate", stack="candidate")  # running on the CPU: holds no VRAM

    response = operator_client.post("/containers/candidate/start", {"gpu_enabled": True}, format="json")

    assert response.status_code == 409
    assert response.json()["starting"] == {"t-core-candidate": 6144}


def test_it_needs_nothing_more_for_a_service_already_running_on_the_gpu(
    docker_answers, operator_client, fake_gpu
):
    fake_gpu(total_mib=24576, used_mib=20000)
    running_row(
        "t-core-candidate", stack="candidate", device_requests=[{"Driver": "nvidia", "DeviceIDs": ["0"]}]
    )

    response = operator_client.post("/containers/candidate/start", {"gpu_enabled": True}, format="json")

    assert response.status_code == 202, response.json()
    assert Operation.objects.get().params["vram_need_mib"] == 0


@pytest.fixture
def prime_declares_vram(settings, test_stack):
    """The live t-core loads a 6 GiB model."""
    core = {**test_stack["services"]["t-core"], "vram_mib": 6144}
    settings.GAIAORCH = {**test_stack, "services": {**test_stack["services"], "t-core": core}}


def test_it_refuses_a_live_start_whose_models_do_not_fit(
    docker_answers, prime_declares_vram, operator_client, fake_gpu
):
    fake_gpu(total_mib=8192, used_mib=4096)

    response = operator_client.post("/containers/live/start")

    assert response.status_code == 409
    assert (response.json()["need_mib"], response.json()["free_mib"]) == (6144, 4096)


def test_it_starts_the_live_stack_unchecked_without_gpu_telemetry(
    docker_answers, prime_declares_vram, operator_client, settings
):
    settings.GPU_BACKEND = "none"

    response = operator_client.post("/containers/live/start")

    assert response.status_code == 202
    assert Operation.objects.get().params["vram_check"].startswith("skipped: telemetry is off")


def test_it_refuses_a_gpu_start_while_another_requester_holds_the_gpu(
    docker_answers, operator_client, fake_gpu
):
    leases.acquire(requester="t-core", reason="prime inference", actor="gaia-core")

    response = operator_client.post("/containers/candidate/start", {"gpu_enabled": True}, format="json")

    assert response.status_code == 409
    assert response.json()["error"] == "gpu_held"
    assert response.json()["holder"] == "t-core"
    assert leases.current_holder(0).requester == "t-core"


def test_it_takes_the_gpu_lease_for_the_candidate(docker_answers, operator_client, fake_gpu):
    response = operator_client.post("/containers/candidate/start", {"gpu_enabled": True}, format="json")

    assert response.status_code == 202
    holder = leases.current_holder(0)
    assert holder.requester == "t-core-candidate"
    assert Operation.objects.get().lease_id == str(holder.id)


def test_it_refuses_a_gpu_start_when_gpu_memory_cannot_be_measured(docker_answers, operator_client, settings):
    settings.GPU_BACKEND = "none"

    response = operator_client.post("/containers/candidate/start", {"gpu_enabled": True}, format="json")

    assert response.status_code == 503
    assert response.json()["error"] == "telemetry_unavailable"


def test_it_lists_reality_rows_and_operations_under_api(test_stack, anonymous_client):
    running_row("t-core", health="healthy")
    operation = Operation.objects.create(kind="live_stop", requested_by="olivia", services=["t-core"])
    operation.steps.create(name="stop t-core", service="t-core")

    rows = anonymous_client.get("/api/containers/").json()["results"]
    core = anonymous_client.get("/api/containers/t-core/").json()
    operations = anonymous_client.get("/api/container-operations/").json()["results"]

    assert [row["service"] for row in rows] == ["t-core"]
    assert core["health"] == "healthy"
    assert operations[0]["id"] == operation.id
    assert operations[0]["steps"][0]["name"] == "stop t-core"
