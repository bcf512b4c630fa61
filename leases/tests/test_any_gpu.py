"""`gpu: "any"`: the GPU is chosen by its measured free memory, against the requester's need.

Two 80 GiB GPUs on the fake backend. The shipped configuration declares gaia-study's need
(vram_mib 16384); gaia-web declares none.
"""

from __future__ import annotations

import pytest
from django.core.management import call_command

from gaiaorch import telemetry
from leases import services
from leases.models import Lease, LeaseStatus
from notifications.models import Event

pytestmark = pytest.mark.django_db

GIB = 1024
TOTAL_MIB = 80 * GIB


@pytest.fixture
def box(settings, tmp_path):
    """free(gib0, gib1): the two GPUs' free memory; no process lists (the memory is nobody's lease)."""
    settings.GPU_BACKEND = "fake"
    settings.FAKE_GPU_FILE = str(tmp_path / "gpus.json")

    def free(*free_gib: float) -> None:
        gpus = [
            {
                "index": i,
                "uuid": f"GPU-box-{i}",
                "total_mib": TOTAL_MIB,
                "used_mib": TOTAL_MIB - round(gib * GIB),
            }
            for i, gib in enumerate(free_gib)
        ]
        telemetry.write_fake(tmp_path / "gpus.json", gpus)

    free(70, 70)
    return free


def acquire(client, requester, **body):
    return client.post(
        "/gpu/acquire", {"requester": requester, "reason": "training", "gpu": "any", **body}, format="json"
    )


def test_it_grants_the_gpu_whose_measured_free_memory_fits_the_need(box, study_client):
    box(12, 70)
    response = acquire(study_client, "gaia-study", memory_mib=40 * GIB)
    assert response.status_code == 200
    body = response.json()
    assert (body["gpu"], body["status"], body["fencing_token"]) == (1, "active", 1)
    assert body["choice"] == (
        "GPU 1: the best fit for 40.0 GiB (70.0 GiB free); GPU 0: 12.0 GiB free, 40.0 GiB needed"
    )
    assert Lease.objects.get(pk=body["lease_id"]).memory_mib == 40 * GIB
    event = Event.objects.get(type="lease.requested")
    assert (event.data["gpu"], event.data["asked_gpu"], event.data["choice"]) == (1, "any", body["choice"])


@pytest.mark.parametrize(("need_gib", "chosen"), [(40, 0), (60, 1), (49, 0)])
def test_it_prefers_the_best_fit(box, need_gib, chosen):
    box(50, 70)
    result = services.acquire(
        requester="gaia-study", reason="x", gpu="any", memory_mib=need_gib * GIB, actor="gaia-study"
    )
    assert result.granted and result.lease.gpu.index == chosen


def test_it_counts_measured_memory_not_the_absence_of_a_lease(box):
    """Nobody leases GPU 0, but something outside every lease fills it: GPU 1 it is."""
    box(2, 70)
    result = services.acquire(requester="gaia-study", reason="x", gpu="any", memory_mib=8 * GIB, actor="t")
    assert result.granted and result.lease.gpu.index == 1
    assert "GPU 0: 2.0 GiB free, 8.0 GiB needed" in result.choice


def test_it_never_chooses_a_held_gpu_or_one_with_waiters(box):
    box(70, 70)
    services.acquire(requester="gaia-core", reason="x", gpu=0, actor="t")
    services.acquire(requester="gaia-core-candidate", reason="x", gpu=1, actor="t")
    services.acquire(requester="gaia-audio", reason="x", gpu=1, actor="t")  # waits on GPU 1
    services.release_without_id(gpu=1, requester="gaia-core-candidate", actor="t")  # GPU 1 to gaia-audio
    services.acquire(requester="gaia-mcp", reason="x", gpu=1, actor="t")  # waits behind gaia-audio
    result = services.acquire(requester="gaia-study", reason="x", gpu="any", actor="t")
    assert not result.granted
    assert result.waiting_for.startswith(
        "GPU 0: held by gaia-core; GPU 1: held by gaia-audio; queued on GPU 0"
    )


def test_it_queues_naming_why_each_gpu_was_not_chosen_and_is_granted_once_memory_frees(
    box, core_client, study_client
):
    box(12, 70)
    assert (
        core_client.post(
            "/gpu/acquire", {"requester": "gaia-core", "reason": "Prime", "gpu": 1}, format="json"
        ).status_code
        == 200
    )
    response = acquire(study_client, "gaia-study", memory_mib=40 * GIB)
    assert response.status_code == 202
    body = response.json()
    assert (body["gpu"], body["queue_position"]) == (0, 1)  # nobody holds GPU 0: its memory may come back
    assert body["waiting_for"].startswith(
        "GPU 0: 12.0 GiB free, 40.0 GiB needed; GPU 1: held by gaia-core; "
        "queued on GPU 0: 40960 MiB free needed, 12288 MiB free on GPU 0"
    )
    assert body["choice"] == "GPU 0: 12.0 GiB free, 40.0 GiB needed; GPU 1: held by gaia-core"
    box(12, 70)
    services.reap()
    assert Lease.objects.get(pk=body["lease_id"]).status == LeaseStatus.WAITING
    box(45, 70)
    services.reap()
    assert Lease.objects.get(pk=body["lease_id"]).status == LeaseStatus.ACTIVE


def test_it_takes_the_configured_need_when_the_request_states_none(box):
    """gaia-study declares vram_mib 16384: 12 GiB free on GPU 0 is not enough."""
    box(12, 20)
    result = services.acquire(requester="gaia-study", reason="x", gpu="any", actor="gaia-study")
    assert result.granted and result.lease.gpu.index == 1
    assert result.lease.memory_mib == 16384
    assert result.choice.startswith("GPU 1: the best fit for 16.0 GiB (20.0 GiB free)")


def test_it_takes_the_gpu_with_the_most_free_memory_when_no_need_is_declared(box):
    box(30, 60)
    result = services.acquire(requester="gaia-web", reason="x", gpu="any", actor="gaia-web")
    assert result.granted and result.lease.gpu.index == 1 and result.lease.memory_mib is None
    assert result.choice == "GPU 1: free (60.0 GiB free); GPU 0: also free (30.0 GiB free)"


def test_it_refuses_a_need_no_gpu_could_ever_hold(box, study_client):
    response = acquire(study_client, "gaia-study", memory_mib=100 * GIB)
    assert response.status_code == 400
    body = response.json()
    assert (
        body["detail"]
        == "No GPU could ever hold 100.0 GiB: the largest has 80.0 GiB beyond the driver's reservation."
    )
    assert body["fields"] == {"memory_mib": [f"at most {TOTAL_MIB} MiB on this box"]}
    assert not Lease.objects.exists()


def test_it_answers_503_for_a_memory_need_without_telemetry(two_gpus, study_client):
    response = acquire(study_client, "gaia-study", memory_mib=8 * GIB)
    assert response.status_code == 503
    body = response.json()
    assert (body["error"], body["telemetry"]) == ("telemetry_unavailable", "none")
    assert "no GPU can be chosen by free memory for 8.0 GiB" in body["detail"]
    assert not Lease.objects.exists()


def test_it_chooses_by_leases_alone_without_telemetry_when_no_need_is_declared(two_gpus):
    services.acquire(requester="gaia-core", reason="x", gpu=0, actor="t")
    result = services.acquire(requester="gaia-web", reason="x", gpu="any", actor="gaia-web")
    assert result.granted and result.lease.gpu.index == 1
    assert result.choice == "GPU 1: free (memory not measured); GPU 0: held by gaia-core"


def test_it_returns_the_requester_s_own_lease_when_it_asks_again(box):
    first = services.acquire(requester="gaia-study", reason="x", gpu="any", memory_mib=GIB, actor="t")
    box(70, 80)  # GPU 1 would now be the better fit
    again = services.acquire(requester="gaia-study", reason="x", gpu="any", memory_mib=GIB, actor="t")
    assert again.lease.pk == first.lease.pk and not again.created
    assert Lease.objects.count() == 1


def test_it_chooses_again_when_the_chosen_gpu_is_taken_before_the_decision(box, monkeypatch):
    box(50, 70)
    choose = services.choose_gpu

    def choose_then_lose_it(requester, need_mib):
        choice = choose(requester, need_mib)
        if choice.gpu == 0 and not Lease.objects.filter(gpu__index=0).exists():
            services.acquire(requester="gaia-core", reason="faster", gpu=0, actor="gaia-core")
        return choice

    monkeypatch.setattr(services, "choose_gpu", choose_then_lose_it)
    result = services.acquire(requester="gaia-study", reason="x", gpu="any", memory_mib=40 * GIB, actor="t")
    assert result.granted and result.lease.gpu.index == 1
    assert "GPU 0: held by gaia-core" in result.choice
    assert Lease.objects.filter(requester="gaia-study").count() == 1


@pytest.mark.parametrize("gpu", ["some", -1, 64, 1.5, True, "0x1", ""])
def test_it_refuses_a_gpu_that_is_neither_an_index_nor_any(box, study_client, gpu):
    response = acquire(study_client, "gaia-study", gpu=gpu)
    assert response.status_code == 400
    assert response.json()["fields"]["gpu"] == ['must be an integer from 0 to 63 or "any"']


def test_it_waits_on_the_chosen_gpu_through_gpu_wait(box, study_client):
    box(12, 70)
    response = study_client.post(
        "/gpu/wait",
        {
            "requester": "gaia-study",
            "reason": "x",
            "gpu": "any",
            "memory_mib": 40 * GIB,
            "timeout_seconds": 1,
        },
        format="json",
    )
    assert response.status_code == 200
    assert (response.json()["gpu"], response.json()["status"]) == (1, "active")


def test_the_cli_acquires_any_gpu_and_says_why(box, capsys):
    box(12, 70)
    call_command(
        "gpu",
        "acquire",
        "--requester",
        "gaia-study",
        "--reason",
        "x",
        "--gpu",
        "any",
        "--memory-mib",
        "40960",
    )
    out = capsys.readouterr().out
    assert "GPU 1 granted to gaia-study" in out
    assert (
        "chosen: GPU 1: the best fit for 40.0 GiB (70.0 GiB free); GPU 0: 12.0 GiB free, 40.0 GiB needed"
        in out
    )
