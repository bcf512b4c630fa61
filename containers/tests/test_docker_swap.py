"""Swapping a candidate in under the live name, seen by a caller container on the shared network."""

from __future__ import annotations

import pytest

from containers.models import Swap
from containers.tests.conftest import RUN_ID, RUN_LABEL
from gaiaorch import config

pytestmark = [pytest.mark.slow, pytest.mark.docker]

RESOLVE_AND_ASK = (
    "for ip in $(nslookup core | awk '/^Name:/ {found=1} found && /^Address/ {print $NF}'); do "
    "wget -q -O- http://$ip:8080/id; done"
)


@pytest.fixture
def caller(docker_client, busybox_image, test_network):
    """Asks every address the name `core` resolves to on the shared network who it is.

    Container-to-container traffic on the test's own bridge network; the static busybox resolves
    names with its own nslookup (its wget cannot use glibc's resolver in a FROM-scratch image).
    """

    def who_answers_core() -> str:
        output = docker_client.containers.run(
            busybox_image,
            ["sh", "-c", RESOLVE_AND_ASK],
            network=test_network,
            labels={RUN_LABEL: RUN_ID},
            remove=True,
        )
        return output.decode().strip()

    return who_answers_core


def run(client, path: str, body: dict | None = None) -> dict:
    response = client.post(path, body or {}, format="json")
    assert response.status_code == 202, response.json()
    detail = client.get(response.json()["status_url"]).json()
    assert detail["status"] == "succeeded", detail
    return detail


def test_it_swaps_the_candidate_in_under_the_live_name_and_back(docker_stack, operator_client, caller):
    run(operator_client, "/containers/live/start")
    run(operator_client, "/containers/candidate/start")
    assert caller() == "t-core"

    run(operator_client, "/containers/swap", {"service": "t-core", "target": "candidate"})

    assert caller() == "t-core-candidate"
    assert Swap.objects.get(service="t-core").target == "candidate"
    assert operator_client.get("/containers/status").json()["swaps"][0]["candidate"] == "t-core-candidate"

    # An orchestrator restart forgets everything in memory; a later live stop/start keeps the swap.
    config._parsed = None
    run(operator_client, "/containers/live/stop")
    run(operator_client, "/containers/live/start")
    assert caller() == "t-core-candidate"

    run(operator_client, "/containers/swap", {"service": "core", "target": "live"})

    assert caller() == "t-core"
    assert Swap.objects.get(service="t-core").target == "live"
    assert operator_client.get("/containers/status").json()["swaps"] == []


def test_it_keeps_traffic_on_the_live_service_when_the_candidate_is_not_healthy(
    docker_stack, operator_client, caller
):
    run(operator_client, "/containers/live/start")

    response = operator_client.post("/containers/swap", {"service": "t-core"}, format="json")

    detail = operator_client.get(response.json()["status_url"]).json()
    assert detail["status"] == "failed"
    assert "t-core-candidate is not healthy (no container)" in detail["error"]
    assert caller() == "t-core"
    assert not Swap.objects.exists()
