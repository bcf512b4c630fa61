"""Who may operate the stacks: operators, and accounts granted the operation under `grants:`.

The two incidents this guards against: a `prometheus` scraping token stopped the live stack (and
so ended gaia-core's lease), and a gaia-study token took a lease in gaia-core-candidate's name
through POST /containers/candidate/start {"gpu_enabled": true}.
"""

from __future__ import annotations

import pytest

from conftest import client_for_token
from containers import services
from containers.models import Operation
from gaiaorch.auth import ensure_service_account
from leases import services as leases
from leases.models import Lease

pytestmark = pytest.mark.django_db


@pytest.fixture
def docker_answers(monkeypatch):
    """Docker 'answers the ping'; the queued operations are only recorded, not run."""
    queued = []
    monkeypatch.setattr(services, "require_docker", lambda: services.docker_reachable(reachable=True))
    monkeypatch.setattr(services, "enqueue", queued.append)
    return queued


@pytest.fixture
def core_serves(db):
    """gaia-core holds GPU 0 for the live stack."""
    return leases.acquire(requester="gaia-core", reason="serving", actor="gaia-core").lease


@pytest.fixture
def grant(settings):
    """grant(account, *rights): the `grants:` section of a new configuration document."""

    def apply(account: str, *rights: str) -> None:
        settings.GAIAORCH = {**settings.GAIAORCH, "grants": {account: list(rights)}}

    return apply


def test_it_refuses_a_scraping_token_stopping_the_live_stack(docker_answers, core_serves):
    prometheus = client_for_token(ensure_service_account("prometheus"))

    response = prometheus.post("/containers/live/stop")

    assert response.status_code == 403, response.content
    assert response.json()["error"] == "forbidden"
    assert response.json()["missing_right"] == "live_stop"
    assert response.json()["actor"] == "prometheus"
    assert not Operation.objects.exists() and not docker_answers
    core_serves.refresh_from_db()
    assert core_serves.status == "active"


def test_it_refuses_a_read_only_account_every_operation_but_lets_it_read(docker_answers, settings):
    settings.OPEN_READS = False
    prometheus = client_for_token(ensure_service_account("prometheus", read_only=True))

    response = prometheus.post("/containers/live/stop")

    assert response.status_code == 403
    assert response.json()["missing_right"] == "write"
    assert "read-only" in response.json()["detail"]
    assert not Operation.objects.exists()
    assert prometheus.get("/containers/status").status_code == 200
    assert prometheus.get("/metrics").status_code == 200


def test_it_refuses_gaia_study_a_lease_in_the_candidates_name(docker_answers, study_client, fake_gpu):
    response = study_client.post("/containers/candidate/start", {"gpu_enabled": True}, format="json")

    assert response.status_code == 403, response.content
    assert response.json()["missing_right"] == "candidate_start"
    assert response.json()["actor"] == "gaia-study"
    assert not Lease.objects.filter(requester="gaia-core-candidate").exists()
    assert not Operation.objects.exists()


def test_it_lets_a_service_granted_the_candidate_start_take_its_lease(
    docker_answers, study_client, fake_gpu, grant
):
    grant("gaia-study", "candidate_start", "candidate_stop")

    response = study_client.post("/containers/candidate/start", {"gpu_enabled": True}, format="json")

    assert response.status_code == 202, response.content
    assert Operation.objects.get().requested_by == "gaia-study"
    assert leases.current_holder(0).requester == "gaia-core-candidate"
    assert study_client.post("/containers/live/stop").json()["missing_right"] == "live_stop"


def test_it_lets_an_operator_stop_the_live_stack_without_any_grant(docker_answers, operator_client):
    assert operator_client.post("/containers/live/stop").status_code == 202
