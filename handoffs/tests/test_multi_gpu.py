"""Several GPUs on one box, on the fake backend: each GPU is measured, attributed, leased and
handed off on its own.

The box has two GPUs of different sizes, listed by the fake file out of index order with UUIDs of
their own (as NVML lists them: index in PCI bus order, the UUID naming the card). Every GPU
process is a real process whose command line attribution reads in /proc, as on a GPU box.

- GPU 0 (24576 MiB): gaia-core holds it; gaia-prime holds 11000 MiB; prime_to_study hands it to
  gaia-study (16384 MiB declared).
- GPU 1 (49152 MiB): lab-trainer (a plain process, no container) holds it with 20000 MiB;
  trainer_to_eval hands it to lab-eval (30000 MiB declared).
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from types import SimpleNamespace

import pytest
from django.db import connection

from handoffs import services as handoff_services
from handoffs import tasks
from handoffs.models import Handoff, Phase
from handoffs.tests.conftest import PRIME_LOADED_MIB, STUDY_MIB
from handoffs.tests.fakes import CONTRACT, FakeGpus, FakeService, GpuProcess, stack_config
from leases import holdings
from leases import services as leases
from leases.models import Lease

GPU0_UUID = "GPU-3f0c9a7e-5b1d-4c2a-9e61-0d7f2b8c4a10"
GPU1_UUID = "GPU-a81e44d2-96c3-4f7b-b0e5-7c2d19f6e3b4"
TRAINER_MIB = 20000
EVAL_MIB = 30000
RESERVED_MIB = 615

LAB_CONTRACT = {
    "lab-trainer": {"/release": {"ok": True}, "/reclaim": {"ok": True}, "/health": {}},
    "lab-eval": {"/ready": {"ok": True}, "/release": {"ok": True}, "/health": {}},
}


@pytest.fixture
def box(tmp_path, settings) -> FakeGpus:
    settings.GPU_BACKEND = "fake"
    settings.FAKE_GPU_FILE = str(tmp_path / "fake-gpu.json")
    return FakeGpus(
        tmp_path / "fake-gpu.json",
        [
            {"index": 1, "uuid": GPU1_UUID, "total_mib": 49152, "reserved_mib": RESERVED_MIB},
            {"index": 0, "uuid": GPU0_UUID, "total_mib": 24576, "reserved_mib": RESERVED_MIB},
        ],
    )


@pytest.fixture
def two_pairs(box, settings):
    """The GAIA fakes on GPU 0 and the lab's on GPU 1, each service a real process recognised by
    its command line; releases free and ready-calls allocate on the service's own GPU."""
    fakes = {name: FakeService(name, routes).start() for name, routes in {**CONTRACT, **LAB_CONTRACT}.items()}
    tag = uuid.uuid4().hex[:8]
    names = ("gaia-prime", "gaia-study", "lab-trainer", "lab-eval", "stranger")
    processes = {name: GpuProcess(f"gaia-fake-{name}-{tag}") for name in names}
    document = stack_config(fakes["gaia-core"].url, fakes["gaia-prime"].url, fakes["gaia-study"].url)
    trainer, lab_eval = fakes["lab-trainer"].url, fakes["lab-eval"].url
    document["services"] |= {
        "lab-trainer": {
            "gpu": True,
            "vram_mib": TRAINER_MIB,
            "release": {"http": {"method": "POST", "url": f"{trainer}/release"}},
            "reclaim": {"http": {"method": "POST", "url": f"{trainer}/reclaim"}},
        },
        "lab-eval": {
            "gpu": True,
            "vram_mib": EVAL_MIB,
            "ready": {"http": {"method": "POST", "url": f"{lab_eval}/ready"}},
            "release": {"http": {"method": "POST", "url": f"{lab_eval}/release"}},
        },
    }
    for name in ("gaia-prime", "gaia-study", "lab-trainer", "lab-eval"):
        document["services"][name]["process"] = {"cmdline": re.escape(processes[name].label)}
    document["handoffs"]["trainer_to_eval"] = {"source": "lab-trainer", "destination": "lab-eval"}
    settings.GAIAORCH = document
    pid = {name: process.pid for name, process in processes.items()}
    fakes["gaia-prime"].on("/sleep", box[0].holder(pid["gaia-prime"], 0))
    fakes["gaia-prime"].on("/wake_up", box[0].holder(pid["gaia-prime"], PRIME_LOADED_MIB))
    fakes["gaia-study"].on("/study/gpu-ready", box[0].holder(pid["gaia-study"], STUDY_MIB))
    fakes["lab-trainer"].on("/release", box[1].holder(pid["lab-trainer"], 0))
    fakes["lab-trainer"].on("/reclaim", box[1].holder(pid["lab-trainer"], TRAINER_MIB))
    fakes["lab-eval"].on("/ready", box[1].holder(pid["lab-eval"], EVAL_MIB))
    box[0].hold(pid["gaia-prime"], PRIME_LOADED_MIB)
    box[1].hold(pid["lab-trainer"], TRAINER_MIB)
    yield SimpleNamespace(fakes=fakes, pid=pid, processes=processes)
    for fake in fakes.values():
        fake.stop()
    for process in processes.values():
        process.stop()


def hold_both() -> dict[int, Lease]:
    held = {
        0: leases.acquire(requester="gaia-core", reason="Prime loaded", gpu=0, actor="gaia-core"),
        1: leases.acquire(requester="lab-trainer", reason="training", gpu=1, actor="lab-trainer"),
    }
    assert all(result.granted for result in held.values())
    return {gpu: result.lease for gpu, result in held.items()}


def cleanup_of(handoff: Handoff):
    return handoff.phases.get(name=Phase.WAITING_CUDA_CLEANUP)


def run_both(*handoffs: Handoff) -> dict[str, float]:
    """Drive the handoffs in threads at once, as two workers would; when each thread finished."""
    finished: dict[str, float] = {}

    def drive(handoff_id: str) -> None:
        try:
            tasks.run_handoff(handoff_id)
            finished[handoff_id] = time.monotonic()
        finally:
            connection.close()

    threads = [threading.Thread(target=drive, args=(str(handoff.id),)) for handoff in handoffs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "a handoff did not finish within 60 s"
    return finished


# --- measured and attributed per GPU ----------------------------------------------------------------


@pytest.mark.django_db
def test_it_lists_each_gpu_with_its_own_uuid_total_and_processes(two_pairs, box, anonymous_client):
    box[1].hold(two_pairs.pid["stranger"], 4096)
    document = anonymous_client.get("/api/gpu/status/").json()
    gpus = {entry["gpu"]: entry for entry in document["gpus"]}
    assert [entry["gpu"] for entry in document["gpus"]] == [0, 1]  # by NVML's index, not file order
    assert (gpus[0]["uuid"], gpus[0]["memory"]["total_mb"]) == (GPU0_UUID, 24576)
    assert (gpus[1]["uuid"], gpus[1]["memory"]["total_mb"]) == (GPU1_UUID, 49152)
    assert gpus[0]["memory"]["by_service_mb"] == {"gaia-prime": PRIME_LOADED_MIB}
    assert gpus[1]["memory"]["by_service_mb"] == {"lab-trainer": TRAINER_MIB}
    assert gpus[0]["memory"]["free_mb"] == 24576 - RESERVED_MIB - PRIME_LOADED_MIB
    assert gpus[1]["memory"]["free_mb"] == 49152 - RESERVED_MIB - TRAINER_MIB - 4096
    assert gpus[0]["tenants"] == []
    assert [tenant["pid"] for tenant in gpus[1]["tenants"]] == [two_pairs.pid["stranger"]]
    assert all(entry["memory"]["attribution_available"] for entry in gpus.values())


@pytest.mark.django_db
def test_it_keeps_gpu_rows_on_nvml_indexes_with_their_uuids(two_pairs, box):
    rows = {gpu.index: gpu for gpu in leases.sync_gpus()}
    assert {index: (row.uuid, row.total_mib) for index, row in rows.items()} == {
        0: (GPU0_UUID, 24576),
        1: (GPU1_UUID, 49152),
    }


@pytest.mark.django_db
def test_it_never_counts_a_service_s_memory_on_gpu_1_against_gpu_0(two_pairs, box, run_handoff):
    """gaia-prime also holds 20000 MiB on GPU 1 (a second engine of it): its release of GPU 0 is
    judged on GPU 0's processes only, and GPU 1's stranger is nobody's business there."""
    hold_both()
    box[1].hold(two_pairs.pid["gaia-prime"], 20000)
    handoff = run_handoff("prime_to_study", gpu=0)
    assert handoff.phase == Phase.COMPLETED, handoff.error
    figures = cleanup_of(handoff).figures
    assert figures["source_mib"] == {"gaia-core": 0, "gaia-prime": 0}
    assert figures["free_mib"] == 24576 - RESERVED_MIB
    assert figures["holders"] == []
    assert box[1].processes[two_pairs.pid["gaia-prime"]] == 20000  # untouched
    assert holdings.current_holder(0).requester == "gaia-study"
    assert holdings.current_holder(1).requester == "lab-trainer"


@pytest.mark.django_db
def test_it_refuses_on_the_gpu_where_the_source_still_holds_memory_only(two_pairs, box, run_handoff):
    """The mirror: gaia-prime frees GPU 1 but not GPU 0; a handoff of GPU 0 names GPU 0's figure."""
    hold_both()
    two_pairs.fakes["gaia-prime"].hooks.clear()  # its sleep answers 200 and frees nothing on GPU 0
    handoff = run_handoff("prime_to_study", gpu=0)
    assert handoff.phase == Phase.FAILED
    assert handoff.error["over_residual"] == {"gaia-prime": PRIME_LOADED_MIB}
    assert "gaia-prime still holds 11000 MiB on GPU 0" in handoff.error["detail"]


@pytest.mark.django_db
def test_it_admits_a_memory_need_against_the_gpu_it_names(two_pairs, box):
    """memory_mib on GPU 1 waits for GPU 1's memory; GPU 0's free memory does not help it."""
    box[1].hold(two_pairs.pid["stranger"], 20000)  # GPU 1: 8537 MiB free; GPU 0 has 12961
    blocked = leases.acquire(requester="lab-eval", reason="eval", gpu=1, memory_mib=10000, actor="t")
    assert not blocked.granted
    assert "10000 MiB free needed, 8537 MiB free on GPU 1" in blocked.lease.waiting_for
    assert f"pid {two_pairs.pid['stranger']}" in blocked.lease.waiting_for
    granted = leases.acquire(requester="lab-trainer", reason="train", gpu=0, memory_mib=10000, actor="t")
    assert granted.granted and granted.lease.gpu.index == 0


# --- two handoffs at once ---------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_it_runs_handoffs_on_two_gpus_at_once_each_verified_against_its_own_gpu(two_pairs, box):
    held = hold_both()
    # Prime frees its memory 1.5 s after answering its sleep: GPU 1's handoff must not wait for it.
    freed_at: list[float] = []

    def free_later() -> None:
        box[0].hold(two_pairs.pid["gaia-prime"], 0)
        freed_at.append(time.monotonic())

    two_pairs.fakes["gaia-prime"].hooks.clear()
    two_pairs.fakes["gaia-prime"].on("/sleep", lambda: threading.Timer(1.5, free_later).start())
    on_gpu0 = handoff_services.start(type="prime_to_study", actor="olivia", gpu=0)
    on_gpu1 = handoff_services.start(type="trainer_to_eval", actor="olivia", gpu=1)
    finished = run_both(on_gpu0, on_gpu1)
    on_gpu0.refresh_from_db()
    on_gpu1.refresh_from_db()
    assert (on_gpu0.phase, on_gpu1.phase) == (Phase.COMPLETED, Phase.COMPLETED), (
        on_gpu0.error,
        on_gpu1.error,
    )
    assert finished[str(on_gpu1.id)] < freed_at[0] < finished[str(on_gpu0.id)]
    gpu0, gpu1 = cleanup_of(on_gpu0).figures, cleanup_of(on_gpu1).figures
    assert (gpu0["free_mib"], gpu0["total_mib"], gpu0["source_mib"]) == (
        24576 - RESERVED_MIB,
        24576,
        {"gaia-core": 0, "gaia-prime": 0},
    )
    assert (gpu1["free_mib"], gpu1["total_mib"], gpu1["source_mib"]) == (
        49152 - RESERVED_MIB,
        49152,
        {"lab-trainer": 0},
    )
    assert gpu1["required_free_mib"] == EVAL_MIB + 512
    # Fencing tokens count per GPU: each source had its GPU's first token, each recipient the second.
    assert held[0].fencing_token == held[1].fencing_token == 1
    for gpu, recipient in ((0, "gaia-study"), (1, "lab-eval")):
        holder = holdings.current_holder(gpu)
        assert (holder.requester, holder.fencing_token) == (recipient, 2)
    assert (on_gpu0.fencing_token, on_gpu1.fencing_token) == (2, 2)
    assert box[0].processes == {two_pairs.pid["gaia-study"]: STUDY_MIB}
    assert box[1].processes == {two_pairs.pid["lab-eval"]: EVAL_MIB}


@pytest.mark.django_db(transaction=True)
def test_it_refuses_a_leak_on_one_gpu_while_the_other_gpu_s_handoff_completes(two_pairs, box):
    hold_both()
    two_pairs.fakes["gaia-prime"].hooks.clear()  # Prime's sleep answers 200 and frees nothing
    two_pairs.fakes["gaia-prime"].on("/wake_up", box[0].holder(two_pairs.pid["gaia-prime"], PRIME_LOADED_MIB))
    leaking = handoff_services.start(type="prime_to_study", actor="olivia", gpu=0)
    clean = handoff_services.start(type="trainer_to_eval", actor="olivia", gpu=1)
    finished = run_both(leaking, clean)
    leaking.refresh_from_db()
    clean.refresh_from_db()
    assert clean.phase == Phase.COMPLETED, clean.error
    assert leaking.phase == Phase.FAILED
    assert (leaking.error["phase"], leaking.error["refusal"]) == (
        "waiting_cuda_cleanup",
        "source_holds_memory",
    )
    assert leaking.error["over_residual"] == {"gaia-prime": PRIME_LOADED_MIB}
    # GPU 1 was handed over while GPU 0 was still waiting out its cleanup deadline.
    cleanup = cleanup_of(leaking)
    assert finished[str(clean.id)] < finished[str(leaking.id)]
    assert Handoff.objects.get(pk=clean.pk).completed_at < cleanup.finished_at
    assert not two_pairs.fakes["gaia-study"].called("/study/gpu-ready")
    assert two_pairs.fakes["lab-eval"].called("/ready")
    assert holdings.current_holder(0).requester == "gaia-core"
    assert holdings.current_holder(1).requester == "lab-eval"
