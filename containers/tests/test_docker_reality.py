"""Reality rows follow Docker: the event stream, the reconcile, and a GPU request Docker cannot honour."""

from __future__ import annotations

import threading
import time

import pytest

from containers import reality
from containers.models import Container
from gaiaorch import ticker
from leases import services as leases
from notifications.models import Event

pytestmark = [pytest.mark.slow, pytest.mark.docker]


@pytest.fixture
def follower():
    """The ticker's Docker event follower, running in a thread as it does in `manage.py ticker`."""
    stop = threading.Event()
    thread = threading.Thread(
        target=ticker.keep_following, args=("docker-events", reality.follow, stop), daemon=True
    )
    thread.start()
    yield
    stop.set()
    thread.join(timeout=15)


def wait_for_state(client, service: str, state: str, within: float) -> float:
    began = time.monotonic()
    while time.monotonic() - began < within:
        entry = next(
            e for e in client.get("/containers/status").json()["services"] if e["service"] == service
        )
        if entry["state"] == state:
            return time.monotonic() - began
        time.sleep(0.05)
    raise AssertionError(f"{service} did not show {state} within {within} s (last: {entry['state']})")


@pytest.mark.postgres  # the follower writes from its own thread: needs a real server, not in-memory SQLite
def test_it_shows_a_container_killed_behind_its_back_as_exited_within_two_seconds(
    docker_stack, operator_client, docker_client, follower
):
    assert operator_client.post("/containers/live/start").status_code == 202
    wait_for_state(operator_client, "t-web", "running", within=5)

    docker_client.containers.get(docker_stack["services"]["t-web"]["container_name"]).kill()

    seconds = wait_for_state(operator_client, "t-web", "exited", within=2.0)
    assert seconds < 2.0
    changed = Event.objects.filter(type="container.state_changed", subject_id="t-web").first()
    assert changed.data["to"]["state"] == "exited"


def test_it_records_every_managed_container_and_absent_ones_on_reconcile(docker_stack, operator_client):
    reality.reconcile()

    status = operator_client.get("/containers/status").json()
    assert status["docker_available"] is True
    assert {entry["state"] for entry in status["services"]} == {"absent"}
    assert Container.objects.count() == len(docker_stack["services"])


def test_it_requests_the_leased_gpu_and_fails_fast_without_an_nvidia_runtime(
    docker_stack, operator_client, inspect, fake_gpu
):
    began = time.monotonic()
    response = operator_client.post("/containers/candidate/start", {"gpu_enabled": True}, format="json")

    assert response.status_code == 202, response.json()
    detail = operator_client.get(response.json()["status_url"]).json()
    assert time.monotonic() - began < 20
    assert detail["status"] == "failed"
    assert "t-core-candidate" in detail["error"]
    assert "nvidia" in detail["error"].lower() and "NVIDIA Container Toolkit" in detail["error"]
    requests = inspect(docker_stack, "t-core-candidate")["HostConfig"]["DeviceRequests"]
    assert requests == [
        {"Driver": "nvidia", "Count": 0, "DeviceIDs": ["0"], "Capabilities": [["gpu"]], "Options": {}}
    ]
    assert inspect(docker_stack, "t-mcp-candidate")["HostConfig"]["DeviceRequests"] is None
    # The failed start gave back the GPU lease it took.
    assert leases.current_holder(0) is None
    assert Event.objects.filter(type="lease.released").exists()


def test_it_recreates_the_candidate_without_a_device_request_when_started_without_gpu(
    docker_stack, operator_client, inspect, fake_gpu
):
    operator_client.post("/containers/candidate/start", {"gpu_enabled": True}, format="json")

    response = operator_client.post("/containers/candidate/start", {"gpu_enabled": False}, format="json")

    detail = operator_client.get(response.json()["status_url"]).json()
    assert detail["status"] == "succeeded", detail
    assert inspect(docker_stack, "t-core-candidate")["HostConfig"]["DeviceRequests"] is None
    start = next(step for step in detail["steps"] if step["name"] == "start t-core-candidate")
    assert "recreated with no device request" in start["detail"]
