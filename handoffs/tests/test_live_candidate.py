"""live⇄candidate: stop the source stack's GPU services, verify, transfer, start the other stack."""

import pytest

from handoffs import strategies
from handoffs.models import Phase
from handoffs.tests.conftest import IDLE_MIB
from handoffs.tests.fakes import FakeContainers
from leases import holdings
from leases import services as leases

pytestmark = pytest.mark.django_db

# Every GPU service of the live stack gives the card up, Study included.
LIVE_GPU_SERVICES = ["gaia-prime", "gaia-core", "gaia-study"]


@pytest.fixture
def containers(monkeypatch, gpu):
    fake = FakeContainers()
    fake.hooks["service_stop"] = gpu.setter(IDLE_MIB)
    monkeypatch.setattr(strategies, "_containers", lambda: fake)
    return fake


def test_it_hands_the_gpu_from_the_live_stack_to_the_candidate_stack(gaia, hold_gpu, containers, run_handoff):
    hold_gpu("gaia-core")
    handoff = run_handoff("live_to_candidate")
    assert handoff.phase == Phase.COMPLETED
    assert containers.requested == [
        ("service_stop", LIVE_GPU_SERVICES, {"actor": "handoffs"}),
        ("candidate_start", ["candidate"], {"actor": "handoffs", "gpu_enabled": True}),
    ]
    assert holdings.current_holder(0).requester == "gaia-core-candidate"
    cleanup = handoff.phases.get(name="waiting_cuda_cleanup").figures
    assert cleanup["need_mib"] == 16384  # both candidate models


def test_it_gives_the_gpu_back_to_the_live_stack(gaia, gpu, hold_gpu, containers, run_handoff):
    hold_gpu("gaia-core-candidate")
    handoff = run_handoff("candidate_to_live")
    assert handoff.phase == Phase.COMPLETED
    assert containers.kinds() == ["service_stop", "live_start"]
    assert containers.requested[1][2]["gpu_enabled"] is False
    assert containers.requested[0][1] == ["gaia-core-candidate"]
    assert holdings.current_holder(0).requester == "gaia-core"


def test_it_restarts_the_live_services_when_the_candidate_stack_fails_to_start(
    gaia, hold_gpu, containers, run_handoff
):
    core_lease = hold_gpu("gaia-core")
    containers.fail["candidate_start"] = "gaia-core-candidate never became healthy"
    handoff = run_handoff("live_to_candidate")
    assert handoff.phase == Phase.FAILED
    assert handoff.error["phase"] == "signaling_recipient"
    assert "never became healthy" in handoff.error["detail"]
    assert containers.kinds() == ["service_stop", "candidate_start", "service_stop", "service_start"]
    assert containers.requested[2][1] == ["gaia-core-candidate"]
    assert containers.requested[3][1] == LIVE_GPU_SERVICES
    holder = holdings.current_holder(0)
    assert holder.requester == "gaia-core"
    assert holder.fencing_token > core_lease.fencing_token
    assert handoff.error["rollback"] == {"complete": True}


def test_it_fails_clearly_when_the_containers_app_refuses(gaia, hold_gpu, monkeypatch, run_handoff):
    hold_gpu("gaia-core")
    monkeypatch.setattr(strategies, "_containers", lambda: None)
    handoff = run_handoff("live_to_candidate")
    assert handoff.phase == Phase.FAILED
    assert handoff.error["code"] == "containers_missing"


def test_it_takes_the_gpu_back_when_the_failed_candidate_start_gave_its_lease_up(
    gaia, hold_gpu, containers, run_handoff
):
    hold_gpu("gaia-core")
    containers.fail["candidate_start"] = "gaia-core-candidate exited with code 1"

    def give_lease_back():  # what the containers app does after a failed GPU start
        holder = holdings.current_holder(0)
        leases.release(holder.lease_id, actor="gaiaorch", reason="container operation failed")

    containers.hooks["candidate_start"] = give_lease_back
    handoff = run_handoff("live_to_candidate")
    assert handoff.phase == Phase.FAILED
    assert handoff.error["rollback"] == {"complete": True}
    assert holdings.current_holder(0).requester == "gaia-core"
    assert handoff.phases.get(name="rolling_back").figures["lease"]["moved"] is True
