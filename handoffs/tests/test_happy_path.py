import pytest

from handoffs.models import Phase
from handoffs.tests.conftest import IDLE_MIB, PRIME_LOADED_MIB, TRAINING_MIB
from leases import holdings
from notifications.models import Event

pytestmark = pytest.mark.django_db

FORWARD_TIMELINE = [
    ("initiated", "succeeded"),
    ("releasing_gpu", "succeeded"),
    ("waiting_cuda_cleanup", "succeeded"),
    ("transferring_ownership", "succeeded"),
    ("signaling_recipient", "succeeded"),
    ("completed", "succeeded"),
]


def timeline(handoff):
    return [(record.name, record.outcome) for record in handoff.phases.order_by("started_at", "id")]


def test_it_hands_prime_s_gpu_to_study_after_measuring_the_freed_vram(gaia, hold_gpu, run_handoff):
    core_lease = hold_gpu("gaia-core")
    handoff = run_handoff("prime_to_study", reason="nightly LoRA")
    assert handoff.phase == Phase.COMPLETED
    assert timeline(handoff) == FORWARD_TIMELINE
    holder = holdings.current_holder(0)
    assert holder.requester == "gaia-study"
    assert holder.fencing_token > core_lease.fencing_token
    assert [call.path for call in gaia["gaia-core"].calls] == ["/gpu/release", "/sleep/study-handoff"]
    assert [call.path for call in gaia["gaia-prime"].calls] == ["/sleep?level=1"]
    ready = gaia["gaia-study"].called("/study/gpu-ready")
    assert ready[0].body["lease_id"] == str(holder.lease_id)
    assert ready[0].body["fencing_token"] == holder.fencing_token
    cleanup = handoff.phases.get(name="waiting_cuda_cleanup").figures
    assert cleanup["vram_before_mib"] == PRIME_LOADED_MIB
    assert cleanup["used_mib"] == IDLE_MIB
    assert (
        cleanup["rule"] == "aggregate"
    )  # a GPU without a process list: the weaker rule (see test_memory_truth)
    assert cleanup["settle"]["settled"] and cleanup["settle"]["samples"] >= 2
    assert handoff.completed_at is not None


def test_it_gives_the_gpu_back_to_prime_waking_prime_before_core(gaia, gpu, hold_gpu, run_handoff):
    hold_gpu("gaia-study")
    gpu.set(TRAINING_MIB)
    handoff = run_handoff("study_to_prime")
    assert handoff.phase == Phase.COMPLETED
    assert holdings.current_holder(0).requester == "gaia-core"
    assert [call.path for call in gaia["gaia-study"].calls] == ["/study/gpu-release"]
    assert [call.path for call in gaia["gaia-prime"].calls] == ["/wake_up"]
    reclaim = gaia["gaia-core"].called("/gpu/reclaim")[0]
    assert reclaim.body["fencing_token"] == handoff.fencing_token


def test_it_writes_an_event_for_every_phase(gaia, hold_gpu, run_handoff):
    hold_gpu("gaia-core")
    handoff = run_handoff()
    events = Event.objects.filter(subject_kind="handoff", subject_id=str(handoff.id)).order_by("id")
    changed = [event.data["phase"] for event in events if event.type == "handoff.phase_changed"]
    assert changed == [
        "releasing_gpu",
        "waiting_cuda_cleanup",
        "transferring_ownership",
        "signaling_recipient",
    ]
    types = [event.type for event in events]
    assert types[0] == "handoff.started"
    assert types[-1] == "handoff.completed"
    assert types.count("handoff.phase_finished") == 4
