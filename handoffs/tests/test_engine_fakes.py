"""The engine fakes of bench/gpu_services.py behave like the engines they imitate (docs/engines.md).

Memory is held in the fake telemetry file (the `fake-file` kind), so every figure below is what
the orchestrator's `fake` backend would measure; the same fakes hold real memory with torch on
the GPU box (bench/gpu_truth.py).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import httpx
import pytest

from bench import gpu_services
from bench.gpu_services import FakeFileMemory, behaviour_from
from gaiaorch import attribution, telemetry
from gaiaorch.config import RECLAIM, RELEASE, EngineCall, HttpCall
from handoffs import strategies
from handoffs.errors import PhaseFailed
from handoffs.tests.processes import ROOT, wait_for

TOTAL_MIB, RESERVED_MIB = 143771, 615


@pytest.fixture
def gpu_file(tmp_path, settings):
    path = tmp_path / "fake-gpu.json"
    settings.GPU_BACKEND = "fake"
    settings.FAKE_GPU_FILE = str(path)
    telemetry.write_fake(
        path,
        [{"index": 0, "total_mib": TOTAL_MIB, "reserved_mib": RESERVED_MIB, "used_mib": 0, "processes": []}],
    )
    return path


def memory_of(gpu_file) -> FakeFileMemory:
    """The engine's own figures, without the CUDA context the harness's fakes keep (its test checks that)."""
    return FakeFileMemory(gpu_file, 0, cuda_context_mib=0)


@pytest.fixture
def start(gpu_file):
    started = []

    def start_fake(engine: str, active: bool = True, **behaviour) -> gpu_services.FakeEngine:
        cls = gpu_services.ENGINES[engine]
        fake = cls(engine, memory_of(gpu_file), behaviour_from(behaviour), active=active).start()
        started.append(fake)
        return fake

    yield start_fake
    for fake in started:
        fake.stop()


def held() -> int:
    """What the fake backend measures as used on GPU 0."""
    return telemetry.sample().gpu(0).used_mib  # type: ignore[union-attr]


def post(fake, path: str, **kwargs) -> httpx.Response:
    return httpx.post(f"{fake.url}{path}", timeout=10, **kwargs)


def get(fake, path: str) -> httpx.Response:
    return httpx.get(f"{fake.url}{path}", timeout=10)


def test_it_is_a_vllm_whose_level_one_sleep_answers_200_and_keeps_its_memory(start):
    vllm = start("vllm", hold_mib=32768, frees_for={"sleep:1": "none", "sleep:2": "full"})
    assert held() == 32768
    slept = post(vllm, "/sleep?level=1")
    assert (slept.status_code, slept.content) == (200, b"")
    assert get(vllm, "/is_sleeping").json() == {"is_sleeping": True}
    assert held() == 32768  # "asleep", and the memory is still held
    assert post(vllm, "/sleep?level=2").status_code == 200
    assert held() == 0
    woke = post(vllm, "/wake_up")
    assert (woke.status_code, woke.content) == (200, b"")
    assert get(vllm, "/is_sleeping").json() == {"is_sleeping": False}
    assert held() == 32768
    assert post(vllm, "/sleep?level=3").status_code == 500


def test_it_is_an_sglang_that_acknowledges_before_the_memory_is_free(start):
    sglang = start("sglang", hold_mib=20000, free_delay_seconds=0.5)
    answered = post(sglang, "/release_memory_occupation", json={"tags": ["weights", "kv_cache"]})
    assert answered.status_code == 200
    assert held() == 20000
    wait_for(lambda: held() == 0, 5, "the delayed free")
    assert post(sglang, "/resume_memory_occupation", json={}).status_code == 200
    assert held() == 20000


def test_it_is_an_ollama_that_unloads_on_keep_alive_zero_and_reloads_on_request(start):
    ollama = start("ollama", hold_mib=9000)
    assert get(ollama, "/api/ps").json()["models"][0]["size_vram"] == 9000 * gpu_services.MIB
    unloaded = post(ollama, "/api/generate", json={"model": "llama3.2", "keep_alive": 0})
    assert unloaded.json()["done_reason"] == "unload" and unloaded.json()["done"] is True
    assert held() == 0 and get(ollama, "/api/ps").json() == {"models": []}
    loaded = post(ollama, "/api/generate", json={"model": "llama3.2", "keep_alive": "10m"})
    assert loaded.json()["done_reason"] == "load"
    assert held() == 9000
    assert post(ollama, "/api/generate", json={"model": "mistral", "keep_alive": 0}).status_code == 404


def test_it_is_a_llama_cpp_router_that_unloads_and_loads_a_model(start):
    router = start("llamacpp", hold_mib=5000)
    model = router.model
    assert get(router, "/models").json()["data"][0]["status"] == {"value": "loaded"}
    assert post(router, "/models/unload", json={"model": model}).json() == {"success": True}
    assert held() == 0 and get(router, "/models").json()["data"][0]["status"] == {"value": "unloaded"}
    assert post(router, "/models/load", json={"model": model}).json() == {"success": True}
    assert held() == 5000
    assert post(router, "/models/unload", json={"model": "other.gguf"}).status_code == 400


def test_it_is_a_gaia_core_that_answers_409_while_busy_then_releases(start):
    core = start("gaia", hold_mib=1000, busy_calls=2)
    answers = [post(core, "/gpu/release", json={"reason": "handoff"}) for _ in range(3)]
    assert [answer.status_code for answer in answers] == [409, 409, 200]
    assert answers[0].json() == {"ok": False, "message": "busy: a generation is in progress", "state": "busy"}
    assert answers[2].json() == {"ok": True, "message": "GPU released", "state": "released"}
    assert held() == 0
    assert post(core, "/gpu/reclaim").json()["state"] == "active"


def test_it_speaks_the_seed_answer_shape_too(gpu_file):
    core = gpu_services.GaiaCore("gaia-core", memory_of(gpu_file), behaviour_from({}), dialect="seed").start()
    try:
        assert post(core, "/gpu/release").json() == {"success": True, "message": "GPU released"}
    finally:
        core.stop()


def test_it_frees_part_of_its_memory_when_told_to(start):
    study = start("study", hold_mib=16384, frees="partial")
    assert post(study, "/study/gpu-release").json()["gpu_available"] is False
    assert held() == 8192


def test_it_fails_a_reclaim_that_cannot_allocate_or_is_refused(start):
    start("tenant", hold_mib=TOTAL_MIB - RESERVED_MIB - 1000)  # someone else took nearly everything
    study = start("study", active=False, hold_mib=16384)
    ready = post(study, "/study/gpu-ready")
    assert ready.status_code == 500
    assert ready.json()["message"].startswith("out of memory: tried to allocate 16384 MiB, 1000 MiB free")
    vllm = start("vllm", active=False, hold_mib=500, reclaim="error")
    assert post(vllm, "/wake_up").status_code == 500
    events = [event["what"] for event in get(vllm, "/_fake/state").json()["events"]]
    assert events == ["reclaim_refused"]


def test_it_answers_slowly_when_told_to(start):
    core = start("gaia", answer_delay_seconds=0.3)
    started = time.monotonic()
    assert post(core, "/gpu/release").status_code == 200
    assert time.monotonic() - started >= 0.3


def test_it_changes_behaviour_and_held_memory_at_run_time(start):
    vllm = start("vllm", hold_mib=1000)
    state = post(vllm, "/_fake/configure", json={"held_mib": 3000, "frees": "none", "reclaim": "oom"}).json()
    assert state["held_mib"] == 3000 and state["behaviour"]["frees"] == 0.0 and held() == 3000
    assert post(vllm, "/_fake/configure", json={"frees": "most"}).status_code == 400
    assert post(vllm, "/_fake/configure", json={"colour": "red"}).status_code == 400


def test_it_runs_as_its_own_process_whose_pid_the_fake_backend_lists(gpu_file):
    command = [sys.executable, "bench/gpu_services.py", "vllm", "--name", "gaia-prime", "--hold-mib", "4096"]
    command += ["--memory", "fake-file", "--fake-file", str(gpu_file)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        ready = json.loads(process.stdout.readline())
        assert ready["pid"] == process.pid and ready["engine"] == "vllm"
        gpu = telemetry.sample().gpu(0)
        with_its_context = 4096 + gpu_services.CUDA_CONTEXT_MIB  # kept until the process exits
        assert gpu.processes == (telemetry.GpuProcess(process.pid, with_its_context),)
        services = [
            attribution.ServiceMatch("gaia-prime", cmdline=r"gpu_services\.py vllm --name gaia-prime")
        ]
        found = attribution.attribute(telemetry.sample(), services).gpu(0)
        assert found.service_mib("gaia-prime") == with_its_context
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
    assert telemetry.sample().gpu(0).processes == () and held() == 0


# --- gaiaorch's engine steps against these fakes (handoffs.strategies.engine_call) ------------------


def engine(kind: str, fake, **options) -> EngineCall:
    return EngineCall(kind, fake.url, **options)


def test_it_sleeps_and_wakes_a_vllm_through_its_own_api(start):
    vllm = start("vllm", hold_mib=32768)
    asleep = strategies.engine_call("gaia-prime", engine("vllm", vllm, level=2), RELEASE, 5)
    assert asleep == {"is_sleeping": True} and held() == 0
    assert [call["path"] for call in get(vllm, "/_fake/state").json()["calls"]][:2] == [
        "/sleep?level=2",
        "/is_sleeping",
    ]
    awake = strategies.engine_call("gaia-prime", engine("vllm", vllm), RECLAIM, 5)
    assert awake == {"is_sleeping": False} and held() == 32768


def test_it_takes_a_failed_vllm_wake_up_as_a_failed_reclaim(start):
    vllm = start("vllm", hold_mib=1000)
    post(vllm, "/sleep?level=1")
    post(vllm, "/_fake/configure", json={"reclaim": "error"})
    with pytest.raises(PhaseFailed, match="answered 500 to POST"):
        strategies.engine_call("gaia-prime", engine("vllm", vllm), RECLAIM, 5)


def test_it_releases_and_resumes_sglangs_memory_occupation(start):
    sglang = start("sglang", hold_mib=20000)
    strategies.engine_call("sglang", engine("sglang", sglang), RELEASE, 5)
    assert held() == 0
    strategies.engine_call("sglang", engine("sglang", sglang), RECLAIM, 5)
    assert held() == 20000


def test_it_unloads_an_ollama_model_with_keep_alive_zero_and_reloads_it(start):
    ollama = start("ollama", hold_mib=9000)
    model = engine("ollama", ollama, model="llama3.2")
    assert strategies.engine_call("ollama", model, RELEASE, 5)["done_reason"] == "unload" and held() == 0
    assert strategies.engine_call("ollama", model, RECLAIM, 5)["done_reason"] == "load" and held() == 9000
    calls = get(ollama, "/_fake/state").json()["calls"]
    assert [call["path"] for call in calls[:2]] == ["/api/generate", "/api/generate"]


def test_it_unloads_and_loads_a_model_of_a_llama_cpp_router(start):
    router = start("llamacpp", hold_mib=5000)
    model = engine("llamacpp", router, model=router.model)
    assert strategies.engine_call("llamacpp", model, RELEASE, 5) == {"success": True} and held() == 0
    assert strategies.engine_call("llamacpp", model, RECLAIM, 5) == {"success": True} and held() == 5000
    with pytest.raises(PhaseFailed, match="answered 400"):
        strategies.engine_call("llamacpp", engine("llamacpp", router, model="other.gguf"), RELEASE, 5)


@pytest.mark.parametrize("dialect", ["seed", "v0.9"])
def test_it_speaks_both_generations_of_the_gaia_contract(gpu_file, dialect):
    core = gpu_services.GaiaCore(
        "gaia-core", memory_of(gpu_file), behaviour_from({"busy_calls": 1}), dialect=dialect
    ).start()
    try:
        call = HttpCall("POST", f"{core.url}/gpu/release")
        with pytest.raises(PhaseFailed) as busy:
            strategies.http_call("gaia-core", call, 5)
        assert busy.value.context["status"] == 409 and strategies.busy(busy.value)
        answer = strategies.http_call("gaia-core", call, 5)
        assert answer.get("success", answer.get("ok")) is True
    finally:
        core.stop()
