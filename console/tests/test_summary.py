from __future__ import annotations

from django.urls import resolve

from containers.services import docker_reachable
from handoffs.models import Handoff
from leases import services as leases


def test_it_indexes_every_endpoint_with_its_methods(anonymous_client, db):
    body = anonymous_client.get("/").json()
    assert body["service"] == "gaia-orchestrator"
    assert body["docs"] == "/api/docs/" and body["schema"] == "/api/schema/"
    endpoints = {entry["path"]: entry["methods"] for entry in body["endpoints"]}
    assert endpoints["/gpu/acquire"] == ["POST"]
    assert endpoints["/gpu/wait"] == ["POST"]
    assert endpoints["/gpu/status"] == ["GET"]
    assert endpoints["/status"] == ["GET"]
    assert endpoints["/ready"] == ["GET"]
    assert endpoints["/api/leases/{pk}/release/"] == ["POST"]
    assert endpoints["/handoff/{handoff_id}/status"] == ["GET"]
    assert not any(path.startswith("/admin/") for path in endpoints)
    for path in endpoints:
        if "{" not in path:
            assert resolve(path), path


def test_it_answers_status_in_the_seed_shape(anonymous_client, fake_gpu, no_docker_calls, db):
    docker_reachable(reachable=True)
    leases.acquire(requester="gaia-prime", reason="serving", actor="gaia-prime")
    body = anonymous_client.get("/status").json()
    assert {"service", "status", "gpu", "containers", "active_handoff", "last_updated"} <= set(body)
    assert body["service"] == "gaia-orchestrator"
    assert body["status"] == "healthy", body["problems"]
    assert body["gpu"]["owner"] == "gaia-prime"
    assert body["gpu"]["memory"]["used_mb"] == 512
    assert body["containers"]["docker_available"] is True
    assert body["active_handoff"] is None


def test_it_reports_the_active_handoff_and_degraded_parts(anonymous_client, settings, db):
    settings.GPU_BACKEND = "fake"
    settings.FAKE_GPU_FILE = "/nonexistent/gpus.json"
    handoff = Handoff.objects.create(
        type="prime_to_study", source="gaia-prime", destination="gaia-study", requested_by="olivia"
    )
    body = anonymous_client.get("/status").json()
    assert body["active_handoff"]["handoff_id"] == str(handoff.id)
    assert body["status"] == "degraded"
    assert any("telemetry" in problem for problem in body["problems"])
    assert any("Docker" in problem for problem in body["problems"])


def _status_queries(client, django_assert_max_num_queries, limit: int) -> None:
    with django_assert_max_num_queries(limit):
        assert client.get("/status").status_code == 200


def test_it_answers_status_in_a_bounded_number_of_queries(
    anonymous_client, fake_gpu, no_docker_calls, django_assert_max_num_queries, db
):
    """Cheap to poll: the query count does not grow with the queue, and Docker is never called."""
    docker_reachable(reachable=True)
    leases.acquire(requester="gaia-prime", reason="serving", actor="gaia-prime")
    anonymous_client.get("/status")  # the first call creates the GPU row
    _status_queries(anonymous_client, django_assert_max_num_queries, STATUS_QUERY_BUDGET)
    waiters = [name for name in leases.requesters() if name != "gaia-prime"]
    assert len(waiters) >= 5
    for name in waiters:
        leases.acquire(requester=name, reason="queued", actor="olivia")
    _status_queries(anonymous_client, django_assert_max_num_queries, STATUS_QUERY_BUDGET)


STATUS_QUERY_BUDGET = 11  # the GPU snapshot, the stacks, the running handoff, incomplete rollbacks


def test_it_answers_unknown_paths_in_the_error_shape(anonymous_client, db):
    response = anonymous_client.get("/containers/operations/-1")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert "text/html" in anonymous_client.get("/admin/no-such-page/").headers["Content-Type"]
