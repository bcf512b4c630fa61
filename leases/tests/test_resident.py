"""A GPU's resident service holds it whenever nobody else does (docs/leases.md, "The resident holder")."""

from __future__ import annotations

from pathlib import Path

import pytest

from gaiaorch import config
from gaiaorch.config import load_yaml
from leases import services
from leases.models import Gpu, Lease, LeaseStatus
from notifications.models import Event

pytestmark = pytest.mark.django_db

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "orchestrator.yaml"


def acquire(requester, **options):
    return services.acquire(requester=requester, reason=f"{requester} work", actor=requester, **options)


def standing_grants() -> list[str]:
    granted = Event.objects.filter(type="lease.granted", data__standing=True).order_by("id")
    return [event.data["requester"] for event in granted]


def test_it_ships_gaia_core_as_gpu_0s_resident():
    assert config.load(load_yaml(SHIPPED)).leases.residents == {0: "gaia-core"}


def test_it_seats_the_resident_on_a_fresh_box_with_the_shipped_configuration(settings):
    settings.GAIAORCH = load_yaml(SHIPPED)
    holder = services.current_holder(0)
    assert holder.requester == "gaia-core" and holder.standing and holder.expires_at is None
    assert standing_grants() == ["gaia-core"]
    assert services.seed_gpu_status()["owner"] == "gaia-core"


def test_it_queues_a_plain_acquire_behind_the_resident(resident):
    result = acquire("gaia-audio")
    assert not result.granted and result.queue_position == 1
    assert result.waiting_for == "GPU 0 is held by gaia-core, its resident: it yields only through a handoff"
    assert services.current_holder(0).requester == "gaia-core"


def test_it_restores_the_resident_when_the_borrower_it_handed_the_gpu_to_releases(resident):
    services.current_holder(0)  # seated
    borrowed = services.transfer(
        gpu=0, to_requester="gaia-study", reason="training", actor="handoff", expected_holder="gaia-core"
    )
    assert not borrowed.standing and Gpu.objects.get(index=0).on_loan
    services.release(borrowed.id, actor="gaia-study")
    back = services.current_holder(0)
    assert back.requester == "gaia-core" and back.standing
    assert back.fencing_token == borrowed.fencing_token + 1
    assert standing_grants() == ["gaia-core", "gaia-core"]
    assert not Gpu.objects.get(index=0).on_loan


def test_it_lets_waiters_go_first_before_the_resident_comes_back(resident):
    services.current_holder(0)
    borrowed = services.transfer(gpu=0, to_requester="gaia-study", reason="training", actor="handoff")
    waiter = acquire("gaia-audio").lease
    services.release(borrowed.id, actor="gaia-study")
    assert services.current_holder(0).id == waiter.id
    services.release(waiter.id, actor="gaia-audio")
    assert services.current_holder(0).requester == "gaia-core"


def test_it_restores_the_resident_when_a_borrower_expires(resident):
    services.current_holder(0)
    borrowed = services.transfer(gpu=0, to_requester="gaia-study", reason="training", actor="handoff")
    services.revoke(borrowed.id, actor="olivia", reason="wedged")
    assert services.current_holder(0).requester == "gaia-core"


def test_it_makes_a_handoff_back_to_the_resident_a_standing_lease(resident):
    services.current_holder(0)
    services.transfer(gpu=0, to_requester="gaia-study", reason="training", actor="handoff")
    back = services.transfer(gpu=0, to_requester="gaia-core", reason="done", actor="handoff")
    assert back.standing and back.expires_at is None and not Gpu.objects.get(index=0).on_loan


def test_it_leaves_the_gpu_free_when_the_resident_gives_it_up_itself(resident):
    seated = services.current_holder(0)
    services.release(seated.id, actor="gaia-core", reason="live stack stopped")
    assert services.current_holder(0) is None
    taken = acquire("gaia-core-candidate").lease  # e.g. the candidate stack starts
    services.release(taken.id, actor="gaia-core-candidate")
    assert services.current_holder(0) is None  # not a loan of the resident's: nothing comes back
    assert standing_grants() == ["gaia-core"]


def test_it_seats_a_resident_named_later_on_a_free_gpu(configure_leases):
    assert services.current_holder(0) is None
    configure_leases(residents={0: "gaia-core"})
    services.sync_gpus()
    assert services.current_holder(0).requester == "gaia-core"


def test_it_shows_the_resident_in_the_status(resident):
    services.current_holder(0)
    entry = services.gpu_status(0)
    assert (entry["owner"], entry["resident"], entry["standing"], entry["on_loan"]) == (
        "gaia-core",
        "gaia-core",
        True,
        False,
    )


def test_it_needs_no_ttl_or_claim_from_the_resident(resident, settings):
    settings.LEASE_DEFAULT_TTL_SECONDS = 30
    seated = services.current_holder(0)
    assert seated.expires_at is None and seated.claim_by is None and seated.ttl_seconds is None
    assert Lease.objects.get(pk=seated.pk).status == LeaseStatus.ACTIVE
