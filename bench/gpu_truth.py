"""GPU truth: the whole service, handing a GPU between fake services that really hold its memory.

Starts fake gaia-core / gaia-prime (a vLLM) / gaia-study and an outside tenant
(bench/gpu_services.py: torch allocations on a GPU box, the fake telemetry file elsewhere), then
gaiaorch itself on a fresh SQLite var directory (migrate + `manage.py runstack`: daphne, worker,
ticker), and runs the release cases below through its HTTP API. A sampler thread reads the GPU
independently (NVML, or the fake file) every 50 ms, so each case is judged on what the GPU really
held, not on what gaiaorch or the fakes said.

Each case states the outcome the handoff rules require (docs/handoffs.md: settled verification by
who holds the memory, co-residence only where allowed, the release ladder, memory-verified
rollback and reclaim retries) and reports pass or fail on what happened. A failing case is a
finding, not a harness error.

    python bench/gpu_truth.py --out "$OUT"                  # GPU box: nvml backend, torch fakes
    python bench/gpu_truth.py --backend fake --out /tmp/gt  # anywhere: the fake backend, same cases

Writes gpu-truth.json (every figure), gpu-truth.md (a summary), service.log and fakes.log under
--out. Exit status: 0 every case passed, 1 some failed, 2 the harness itself could not run.
Needs Django and the project's requirements importable, and torch for --backend nvml.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gaiaorch import attribution, telemetry  # noqa: E402  (Django-free modules)

TERMINAL = ("completed", "failed", "cancelled")
FAKE_TOTAL_MIB, FAKE_RESERVED_MIB = 143771, 615  # an H200 as NVML v2 shows it idle
RESIDUAL_MIB = 2048  # a live process's CUDA context stays after its release: 1,542 MiB on the H200
LADDER_STEP_SECONDS = 2  # how long Prime's level-1 sleep gets to free its memory before level 2
SAMPLE_SECONDS = 0.05


class HarnessError(Exception):
    """The harness could not do its own part (a fake or the service did not start)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def epoch(stamp: str | None) -> float | None:
    return datetime.fromisoformat(stamp).timestamp() if stamp else None


# --- the fakes -----------------------------------------------------------------------------------


class Fake:
    """A bench/gpu_services.py process."""

    def __init__(self, box: Box, engine: str, name: str, *options: str):
        self.name = name
        self.log = box.var / f"fake-{name}.log"
        command = [sys.executable, str(ROOT / "bench" / "gpu_services.py"), engine, "--name", name]
        command += box.memory_options + list(options)
        self.popen = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=self.log.open("w"), text=True, cwd=ROOT, env=box.env
        )
        self.url = ""
        self.pid = self.popen.pid

    def wait_ready(self, seconds: float) -> None:
        ready: list[str] = []
        reader = threading.Thread(target=lambda: ready.append(self.popen.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(seconds)
        if not ready or not ready[0].strip():
            raise HarnessError(f"fake {self.name} did not start: {self.log.read_text()[-2000:]}")
        self.url = json.loads(ready[0])["url"]

    def configure(self, **values: Any) -> dict[str, Any]:
        answer = httpx.post(f"{self.url}/_fake/configure", json=values, timeout=120)
        if answer.status_code != 200:
            raise HarnessError(f"fake {self.name} refused {values}: {answer.status_code} {answer.text[:500]}")
        return answer.json()

    def state(self) -> dict[str, Any]:
        return httpx.get(f"{self.url}/_fake/state", timeout=10).json()

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


# --- the GPU, read independently -----------------------------------------------------------------


@dataclass
class Reading:
    at: float
    used_mib: int
    free_mib: int
    by_pid: dict[int, int]


class Truth(threading.Thread):
    """Samples the GPU every SAMPLE_SECONDS: what each pid really held, and when."""

    def __init__(self, read: Callable[[], telemetry.GpuSample]):
        super().__init__(daemon=True, name="truth")
        self.read = read
        self.readings: list[Reading] = []
        self.errors: list[str] = []
        self.stopping = threading.Event()

    def now(self) -> telemetry.GpuSample:
        return self.read()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                gpu = self.read()
                by_pid = {p.pid: p.used_mib or 0 for p in gpu.processes}
                self.readings.append(Reading(time.time(), gpu.used_mib, gpu.free_mib, by_pid))
            except Exception as exc:  # keep sampling; the report shows what failed
                self.errors.append(f"{time.time():.3f} {exc!r}")
            time.sleep(SAMPLE_SECONDS)

    def held_at(self, pid: int, at: float) -> int | None:
        """What pid held in the last reading at or before `at`."""
        before = [reading for reading in self.readings if reading.at <= at]
        return before[-1].by_pid.get(pid, 0) if before else None

    def first_at_most(self, pid: int, mib: int, after: float) -> float | None:
        return next((r.at for r in self.readings if r.at >= after and r.by_pid.get(pid, 0) <= mib), None)


# --- the box: fakes, service, API ----------------------------------------------------------------


@dataclass
class Sizes:
    total_mib: int
    reserved_mib: int | None
    study_mib: int  # what gaia-study declares it needs (vram_mib) and allocates when signalled
    prime_mib: int  # Prime's model in the ordinary cases
    big_prime_mib: int  # so large that Study no longer fits beside it


class Box:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.var = Path(tempfile.mkdtemp(prefix="gaiaorch-gpu-truth-"))
        self.fake_file = self.var / "fake-gpu.json"
        self.port = free_port()
        self.env = {key: value for key, value in os.environ.items() if not key.startswith("GAIAORCH_")}
        self.env.pop("DATABASE_URL", None)
        self.env.pop("REDIS_URL", None)
        if args.backend == "fake":
            gpu = {"index": args.gpu, "total_mib": FAKE_TOTAL_MIB, "reserved_mib": FAKE_RESERVED_MIB}
            telemetry.write_fake(self.fake_file, [{**gpu, "uuid": "GPU-fake-h200", "used_mib": 0}])
            self.memory_options = ["--memory", "fake-file", "--fake-file", str(self.fake_file)]
        else:
            self.memory_options = ["--memory", "torch", "--gpu", str(args.gpu)]
        self.fakes: dict[str, Fake] = {}
        self.service: subprocess.Popen | None = None
        self.tokens: dict[str, str] = {}
        self.api = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)
        self.truth = Truth(self._read_gpu)

    def _read_gpu(self) -> telemetry.GpuSample:
        gpus = telemetry.read_fake(self.fake_file) if self.args.backend == "fake" else telemetry.Nvml.read()
        return next(gpu for gpu in gpus if gpu.index == self.args.gpu)

    def sizes(self) -> Sizes:
        gpu = self._read_gpu()
        study = min(32768, gpu.total_mib // 4)
        available = gpu.total_mib - (gpu.reserved_mib or 0)
        return Sizes(gpu.total_mib, gpu.reserved_mib, study, study, available - study + 8192)

    # ---- fakes

    def start_fakes(self, sizes: Sizes) -> None:
        """gaia-prime resident with the big model before anything else runs (the fresh-database case)."""
        self.fakes = {
            "gaia-core": Fake(self, "gaia", "gaia-core"),
            "gaia-prime": Fake(
                self, "vllm", "gaia-prime", "--hold-mib", str(sizes.big_prime_mib), "--frees", "none"
            ),
            "gaia-study": Fake(self, "study", "gaia-study", "--inactive", "--hold-mib", str(sizes.study_mib)),
            "tenant": Fake(self, "tenant", "tenant"),
        }
        for fake in self.fakes.values():
            fake.wait_ready(180)

    # ---- the service

    def configuration(self, sizes: Sizes) -> dict[str, Any]:
        """The shipped config/orchestrator.yaml, pointed at the fakes (so it stays a valid config)."""
        config = yaml.safe_load((ROOT / "config" / "orchestrator.yaml").read_text())
        gpu = config.setdefault("gpu", {})
        gpu.update(
            backend=self.args.backend, poll_ms=100, residual_mib=RESIDUAL_MIB, tenant_interval_seconds=1
        )
        if self.args.backend == "fake":
            gpu["fake_file"] = str(self.fake_file)
        core, prime, study = (self.fakes[name].url for name in ("gaia-core", "gaia-prime", "gaia-study"))
        services = config["services"]
        services["gaia-prime"].update(
            health_url=f"{prime}/health",
            vram_mib=sizes.prime_mib,
            # The release ladder: level-1 sleep, 2 s for the memory to go, then level 2.
            release=[
                {"vllm": {"url": prime, "level": 1}, "deadline_seconds": LADDER_STEP_SECONDS},
                {"vllm": {"url": prime, "level": 2}},
            ],
            reclaim={"vllm": {"url": prime}},
        )
        services["gaia-core"].update(
            health_url=f"{core}/health",
            release={"http": {"method": "POST", "url": f"{core}/gpu/release"}},
            reclaim={"http": {"method": "POST", "url": f"{core}/gpu/reclaim"}},
        )
        services["gaia-study"].update(
            health_url=f"{study}/health",
            vram_mib=sizes.study_mib,
            ready={"http": {"method": "POST", "url": f"{study}/study/gpu-ready"}},
            release={"http": {"method": "POST", "url": f"{study}/study/gpu-release"}},
        )
        if self.args.process_keys:  # how gaiaorch tells the fakes' GPU processes apart
            for name in ("gaia-prime", "gaia-core", "gaia-study"):
                services[name]["process"] = {"cmdline": cmdline_pattern(name)}
        config.setdefault("docker", {})["reconcile_interval_seconds"] = 30
        config["handoffs"].update(
            phase_timeout_seconds=20,
            http_timeout_seconds=5,
            stale_after_seconds=15,
            signal_retry_max_seconds=1,
            on_recipient_unacknowledged="rollback",
        )
        return config

    def start_service(self, sizes: Sizes) -> float:
        (self.var / "orchestrator.yaml").write_text(yaml.safe_dump(self.configuration(sizes)))
        self.env.update(
            GAIAORCH_CONFIG=str(self.var / "orchestrator.yaml"),
            GAIAORCH_VAR_DIR=str(self.var),
            GAIAORCH_GPU_BACKEND=self.args.backend,
            GAIAORCH_FAKE_GPU_FILE=str(self.fake_file),
            GAIAORCH_PORT=str(self.port),
            GAIAORCH_BIND="127.0.0.1",
            GAIAORCH_LOG_LEVEL="INFO",
        )
        started = time.monotonic()
        self._manage("migrate", "--noinput")
        for name in ("gaia-core", "gaia-study"):
            self.tokens[name] = self._manage("service_account", name).strip().splitlines()[-1]
        log = (self.var / "service.log").open("w")
        self.service = subprocess.Popen(
            [sys.executable, "manage.py", "runstack"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.service.poll() is not None:
                raise HarnessError(f"runstack exited: {(self.var / 'service.log').read_text()[-3000:]}")
            try:
                if self.api.get("/health", timeout=2).status_code == 200:
                    return round(time.monotonic() - started, 2)
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise HarnessError("gaiaorch did not answer /health within 90 s")

    def _manage(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise HarnessError(f"manage.py {' '.join(args)} failed: {done.stderr[-3000:]}")
        return done.stdout

    def call(self, method: str, path: str, as_service: str | None = None, **kwargs) -> httpx.Response:
        headers = {"Authorization": f"Token {self.tokens[as_service]}"} if as_service else {}
        return self.api.request(method, path, headers=headers, **kwargs)

    def stop(self) -> None:
        self.truth.stopping.set()
        if self.service and self.service.poll() is None:
            os.killpg(self.service.pid, signal.SIGTERM)
            try:
                self.service.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.service.pid, signal.SIGKILL)
                self.service.wait()
        for fake in self.fakes.values():
            fake.stop()


def cmdline_pattern(service: str) -> str:
    """How the fakes are recognised by their command line (attribution by process match)."""
    return rf"gpu_services\.py \w+ --name {re.escape(service)}( |$)"


SERVICE_MATCHES = [
    attribution.ServiceMatch(name, cmdline=cmdline_pattern(name))
    for name in ("gaia-core", "gaia-prime", "gaia-study")
]


# --- one case --------------------------------------------------------------------------------------


@dataclass
class Check:
    what: str
    expected: str
    observed: str
    passed: bool


@dataclass
class CaseResult:
    name: str
    title: str
    expected: str
    checks: list[Check] = field(default_factory=list)
    handoff: dict[str, Any] = field(default_factory=dict)
    phases: list[dict[str, Any]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    attribution: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.error and bool(self.checks) and all(check.passed for check in self.checks)

    def check(self, what: str, expected: str, observed: Any, passed: bool) -> None:
        self.checks.append(Check(what, expected, str(observed), bool(passed)))


class Run:
    """What every case does: reset the fakes and the lease, start a handoff, follow it, judge it."""

    def __init__(self, box: Box, sizes: Sizes):
        self.box = box
        self.sizes = sizes
        self.fakes = box.fakes
        self.since = 0.0  # wall clock at the start of the current case: its calls and events only

    def pid(self, name: str) -> int:
        return self.fakes[name].pid

    def release_lease(self) -> None:
        status = self.box.call("GET", "/gpu/status").json()
        holder, lease_id = status.get("owner"), status.get("lease_id")
        if holder and lease_id:
            answer = self.box.call("POST", "/gpu/release", as_service=holder, json={"lease_id": lease_id})
            if answer.status_code != 200:
                raise HarnessError(
                    f"could not release {holder}'s lease: {answer.status_code} {answer.text[:300]}"
                )

    def reset(self, *, prime_mib: int, prime: dict[str, Any], study: dict[str, Any] | None = None) -> None:
        self.since = time.time()
        self.wait_no_active_handoff()
        self.release_lease()
        defaults = {"frees": "full", "frees_for": {}, "answer_delay_seconds": 0, "free_delay_seconds": 0}
        defaults |= {"reclaim": "ok", "busy_calls": 0}
        self.fakes["tenant"].configure(held_mib=0)
        self.fakes["gaia-study"].configure(
            **defaults | (study or {}), held_mib=0, active=False, hold_mib=self.sizes.study_mib
        )
        self.fakes["gaia-core"].configure(**defaults)
        self.fakes["gaia-prime"].configure(
            **defaults | prime, held_mib=prime_mib, active=True, hold_mib=prime_mib
        )
        time.sleep(0.5)  # let the GPU and the ticker's idle sampling see the new state

    def acquire_for_core(self, case: str) -> None:
        answer = self.box.call(
            "POST",
            "/gpu/acquire",
            as_service="gaia-core",
            json={"requester": "gaia-core", "reason": f"gpu truth: {case}"},
        )
        if answer.status_code != 200:
            raise HarnessError(f"gaia-core could not take the GPU: {answer.status_code} {answer.text[:300]}")

    def wait_no_active_handoff(self, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not self.box.call("GET", "/status").json().get("active_handoff"):
                return
            time.sleep(0.2)
        raise HarnessError(f"a handoff was still active after {seconds} s")

    def handoff(self, timeout_seconds: int) -> tuple[str, float]:
        started = time.time()
        answer = self.box.call(
            "POST",
            "/handoff/prime-to-study",
            as_service="gaia-study",
            json={"reason": "gpu truth", "timeout_seconds": timeout_seconds},
        )
        if answer.status_code != 202:
            raise HarnessError(f"the handoff was not started: {answer.status_code} {answer.text[:500]}")
        return answer.json()["handoff_id"], started

    def status(self, handoff_id: str) -> dict[str, Any]:
        return self.box.call("GET", f"/handoff/{handoff_id}/status").json()

    def follow(self, handoff_id: str, seconds: float, on_phase: Callable[[str], None] | None = None) -> dict:
        deadline = time.monotonic() + seconds
        seen = ""
        while time.monotonic() < deadline:
            status = self.status(handoff_id)
            if on_phase and status["phase"] != seen:
                seen = status["phase"]
                on_phase(seen)
            if status["phase"] in TERMINAL:
                return status
            time.sleep(0.05)
        raise HarnessError(f"handoff {handoff_id} did not end within {seconds} s")

    def attribute_now(self) -> dict[str, Any]:
        sample = telemetry.Telemetry(True, gpus=(self.box.truth.now(),), backend=self.box.args.backend)
        directory = attribution.ContainerDirectory("unix:///var/run/docker.sock", timeout_seconds=1)
        return attribution.attribute(sample, SERVICE_MATCHES, containers=directory).gpus[0].as_dict()

    # ---- judging

    @staticmethod
    def phases(status: dict[str, Any]) -> list[dict[str, Any]]:
        rows = []
        for record in status.get("phases", []):
            started, finished = epoch(record.get("started_at")), epoch(record.get("finished_at"))
            seconds = None if started is None or finished is None else finished - started
            rows.append({**record, "seconds": None if seconds is None else round(seconds, 6)})
        return rows

    @staticmethod
    def record(status: dict[str, Any], phase: str) -> dict[str, Any] | None:
        matching = [record for record in status.get("phases", []) if record["name"] == phase]
        return matching[-1] if matching else None

    def calls(self, name: str, path: str, state: dict | None = None) -> list[dict[str, Any]]:
        """A fake's calls to a path in this case: exactly as given with a query string, else any query."""
        state = state or self.fakes[name].state()
        calls = [call for call in state["calls"] if call["at"] >= self.since]
        if "?" in path:
            return [call for call in calls if call["path"] == path]
        return [call for call in calls if call["path"].split("?", 1)[0] == path]

    def events(self, state: dict[str, Any], what: str) -> list[dict[str, Any]]:
        return [event for event in state["events"] if event["at"] >= self.since and event["what"] == what]

    def judge_refused(self, result: CaseResult, status: dict[str, Any], study_state: dict[str, Any]) -> None:
        """The handoff must fail at the cleanup check, and Study must never be told to start."""
        cleanup = self.record(status, "waiting_cuda_cleanup")
        result.check("handoff refused", "failed", status["phase"], status["phase"] == "failed")
        result.check(
            "refused by the cleanup verification",
            "waiting_cuda_cleanup failed",
            f"waiting_cuda_cleanup {cleanup['outcome'] if cleanup else 'never ran'}",
            cleanup is not None and cleanup["outcome"] == "failed",
        )
        ready = self.calls("gaia-study", "/study/gpu-ready", study_state)
        result.check(
            "gaia-study never signalled", "0 calls to /study/gpu-ready", f"{len(ready)} calls", not ready
        )
        self.judge_logged(result, status)

    def judge_logged(self, result: CaseResult, status: dict[str, Any]) -> None:
        log = (self.box.var / "service.log").read_text(errors="replace")
        lines = [
            line
            for line in log.splitlines()
            if status["handoff_id"] in line and re.search(r" (WARNING|ERROR) ", line)
        ]
        result.check(
            "the service log names the failed handoff",
            "a WARNING/ERROR line with the handoff id",
            lines[0][:200] if lines else "none",
            bool(lines),
        )

    def latency(self, result: CaseResult, status: dict[str, Any], released_at: float) -> None:
        """freed→verified: from Prime's last free (its own clock, after empty_cache returned) to the
        cleanup phase's success; the sampler's first reading of the drop is reported beside it."""
        cleanup = self.record(status, "waiting_cuda_cleanup")
        frees = [event for event in self.events(self.fakes["gaia-prime"].state(), "freed") if event["mib"]]
        freed = frees[-1]["at"] if frees else None
        verified = epoch(cleanup["finished_at"]) if cleanup and cleanup["outcome"] == "succeeded" else None
        result.figures["prime_freed_at"] = freed
        result.figures["sampler_saw_drop_at"] = self.box.truth.first_at_most(
            self.pid("gaia-prime"), RESIDUAL_MIB, released_at
        )
        result.figures["cleanup_verified_at"] = verified
        result.figures["freed_to_verified_seconds"] = (
            round(verified - freed, 3) if freed is not None and verified is not None else None
        )

    def check_prime_gone_when_study_signalled(self, result: CaseResult, study_state: dict[str, Any]) -> None:
        """Prime's memory was gone before Study was told to start, by Prime's own record of its
        frees (exact in time) and by the first GPU reading after the call (the sampler's view)."""
        ready = self.calls("gaia-study", "/study/gpu-ready", study_state)
        signalled = ready[0]["at"] if ready else None
        own = gpu = None
        if signalled is not None:
            prime = self.fakes["gaia-prime"].state()
            before = [event for event in prime["events"] if event["at"] <= signalled]
            own = before[-1]["held_mib"] if before else None
            later = [r for r in self.box.truth.readings if r.at >= signalled]
            gpu = later[0].by_pid.get(self.pid("gaia-prime"), 0) if later else None
        result.figures["prime_mib_when_study_signalled"] = {"prime_says": own, "gpu_right_after": gpu}
        result.check(
            "Prime's memory was gone when Study was signalled",
            f"≤ {RESIDUAL_MIB} MiB (Prime's record and the GPU)",
            "Study was never signalled" if signalled is None else f"Prime: {own} MiB, GPU: {gpu} MiB",
            own is not None and gpu is not None and own <= RESIDUAL_MIB and gpu <= RESIDUAL_MIB,
        )


# --- the cases ---------------------------------------------------------------------------------------


def fresh_database_full_leak(run: Run, result: CaseResult) -> None:
    """Prime resident before gaiaorch ever started; its release frees nothing; Study cannot fit."""
    # The fakes started with Prime's big model and frees=none; the ticker has been sampling the
    # "idle baseline" (no lease active) while Prime was resident, as on a fresh install.
    run.since = time.time()
    time.sleep(2.5)
    run.box.call("GET", "/gpu/status")
    run.fakes["gaia-study"].configure(held_mib=0, active=False, hold_mib=run.sizes.study_mib)
    run.acquire_for_core(result.name)
    result.attribution["before"] = run.attribute_now()
    handoff_id, started = run.handoff(timeout_seconds=8)
    status = run.follow(handoff_id, 90)
    finish(run, result, status, started)
    study = run.fakes["gaia-study"].state()
    run.judge_refused(result, status, study)
    held = run.box.truth.held_at(run.pid("gaia-prime"), time.time())
    result.check(
        "gaia-prime still holds its model",
        f"≈ {run.sizes.big_prime_mib} MiB",
        held,
        held and held > RESIDUAL_MIB,  # type: ignore[arg-type]
    )


def clean_release(run: Run, result: CaseResult) -> None:
    run.reset(prime_mib=run.sizes.prime_mib, prime={"frees": "full"})
    run.acquire_for_core(result.name)
    before = result.attribution["before"] = run.attribute_now()
    attributed = before["by_service_mib"].get("gaia-prime", 0)
    result.check(
        "NVML's process list attributes Prime's memory to gaia-prime (by command line)",
        f"≥ {run.sizes.prime_mib} MiB",
        f"{attributed} MiB (available={before['available']}, {before['reason'] or 'no reason'})",
        before["available"] and attributed >= run.sizes.prime_mib,
    )
    handoff_id, started = run.handoff(timeout_seconds=20)
    status = run.follow(handoff_id, 90)
    finish(run, result, status, started)
    study = run.fakes["gaia-study"].state()
    result.check("handoff completed", "completed", status["phase"], status["phase"] == "completed")
    run.check_prime_gone_when_study_signalled(result, study)
    failed = run.events(study, "allocation_failed")
    result.check("Study's allocation succeeded", "no allocation failure", failed or "none", not failed)
    negative = [
        (p["name"], p["seconds"]) for p in result.phases if p["seconds"] is not None and p["seconds"] < 0
    ]
    result.check("no phase records a negative duration", "all ≥ 0 s", negative or "none", not negative)
    run.latency(result, status, started)
    result.attribution["after"] = run.attribute_now()


def leak_recipient_fits(run: Run, result: CaseResult) -> None:
    run.reset(prime_mib=run.sizes.prime_mib, prime={"frees": "none"})
    refused_case(run, result, timeout_seconds=8)


def partial_release(run: Run, result: CaseResult) -> None:
    run.reset(prime_mib=run.sizes.prime_mib, prime={"frees": "partial"})
    refused_case(run, result, timeout_seconds=8)


def refused_case(run: Run, result: CaseResult, timeout_seconds: int) -> None:
    run.acquire_for_core(result.name)
    handoff_id, started = run.handoff(timeout_seconds=timeout_seconds)
    status = run.follow(handoff_id, 90)
    finish(run, result, status, started)
    run.judge_refused(result, status, run.fakes["gaia-study"].state())
    result.attribution["after"] = run.attribute_now()


def grab_during_cleanup(run: Run, result: CaseResult) -> None:
    """Prime answers its release after 1 s and frees 3 s later; meanwhile an outsider takes the room."""
    prime_mib = run.sizes.study_mib // 2
    run.reset(prime_mib=prime_mib, prime={"answer_delay_seconds": 1, "free_delay_seconds": 3})
    run.acquire_for_core(result.name)
    grabbed: dict[str, Any] = {}

    def grab_once(phase: str) -> None:
        if phase in ("releasing_gpu", "waiting_cuda_cleanup") and not grabbed:
            free = run.box.truth.now().free_mib
            grabbed["mib"] = max(0, free - 4096)  # leaves less than Study needs once Prime is gone
            grabbed["state"] = run.fakes["tenant"].configure(held_mib=grabbed["mib"])["held_mib"]

    handoff_id, started = run.handoff(timeout_seconds=10)
    status = run.follow(handoff_id, 90, on_phase=grab_once)
    finish(run, result, status, started)
    result.figures["tenant_pid"] = run.pid("tenant")
    result.figures["tenant_mib"] = grabbed.get("state")
    run.judge_refused(result, status, run.fakes["gaia-study"].state())
    told = json.dumps({"error": status.get("error_context"), "phases": status.get("phases")})
    pid = str(run.pid("tenant"))
    result.check(
        "the refusal names the process that took the memory",
        f"pid {pid} in the error or the cleanup figures",
        "named" if re.search(rf"\b{pid}\b", told) else (status.get("error") or "")[:200],
        re.search(rf"\b{pid}\b", told) is not None,
    )
    result.attribution["after"] = run.attribute_now()
    run.fakes["tenant"].configure(held_mib=0)


def vllm_sleep_keeps_memory(run: Run, result: CaseResult) -> None:
    """Level-1 sleep answers 200 and keeps everything; level 2 (or a later step) frees it."""
    run.reset(prime_mib=run.sizes.prime_mib, prime={"frees": "full", "frees_for": {"sleep:1": "none"}})
    run.acquire_for_core(result.name)
    handoff_id, started = run.handoff(timeout_seconds=20)
    status = run.follow(handoff_id, 120)
    finish(run, result, status, started)
    prime, study = run.fakes["gaia-prime"].state(), run.fakes["gaia-study"].state()
    result.check("handoff completed", "completed", status["phase"], status["phase"] == "completed")
    sleeps = run.calls("gaia-prime", "/sleep", prime)
    steps = [call["path"] for call in sleeps]
    ready = run.calls("gaia-study", "/study/gpu-ready", study)
    escalated = [call for call in sleeps if call["path"] != "/sleep?level=1"]
    result.check(
        "the ladder escalated past /sleep?level=1 before Study was signalled",
        "a further release step, then /study/gpu-ready",
        steps,
        bool(escalated) and bool(ready) and escalated[0]["at"] < ready[0]["at"],
    )
    run.check_prime_gone_when_study_signalled(result, study)
    run.latency(result, status, started)


def memory_aware_acquire(run: Run, result: CaseResult) -> None:
    """gpu "any" on the one GPU, nobody holding its lease while Prime keeps its model: a need that
    fits the measured free memory is granted there; a larger one waits, naming why."""
    run.reset(prime_mib=run.sizes.prime_mib, prime={"frees": "full"})
    gpu = run.box.args.gpu
    free = run.box.truth.now().free_mib
    fits, too_big = max(1024, free - 4096), free + 8192
    result.figures |= {"free_mib": free, "fits_mib": fits, "too_big_mib": too_big}
    body = {"requester": "gaia-study", "reason": "gpu truth: memory-aware acquire", "gpu": "any"}
    granted = run.box.call("POST", "/gpu/acquire", as_service="gaia-study", json={**body, "memory_mib": fits})
    answer = granted.json()
    result.figures["granted"] = answer
    result.check(
        f"a need that fits ({fits} MiB of {free} free) is granted on GPU {gpu}",
        f"200 on GPU {gpu}, the best fit",
        f"{granted.status_code} on GPU {answer.get('gpu')}: {answer.get('choice') or answer.get('detail')}",
        granted.status_code == 200
        and answer.get("gpu") == gpu
        and f"GPU {gpu}: the best fit" in (answer.get("choice") or ""),
    )
    if granted.status_code == 200:
        run.box.call("POST", "/gpu/release", as_service="gaia-study", json={"lease_id": answer["lease_id"]})
    queued = run.box.call(
        "POST", "/gpu/acquire", as_service="gaia-study", json={**body, "memory_mib": too_big}
    )
    answer = queued.json()
    result.figures["queued"] = answer
    why = answer.get("waiting_for") or answer.get("detail") or ""
    result.check(
        f"a need larger than the free memory ({too_big} MiB) waits, naming why",
        f"202 queued on GPU {gpu}: free and needed GiB, and who holds the memory (gaia-prime)",
        f"{queued.status_code}: {why}",
        queued.status_code == 202
        and re.search(rf"GPU {gpu}: [0-9.]+ GiB free, {too_big / 1024:.1f} GiB needed", why) is not None
        and "gaia-prime" in why,
    )
    if "lease_id" in answer:
        run.box.call("POST", "/gpu/release", as_service="gaia-study", json={"lease_id": answer["lease_id"]})
    study = run.fakes["gaia-study"].state()
    signalled = run.calls("gaia-study", "/study/gpu-ready", study)
    result.check("Study was never signalled", "no /study/gpu-ready", signalled or "none", not signalled)


def reclaim_impossible(run: Run, result: CaseResult) -> None:
    """Study never acknowledges, so the handoff rolls back; Prime's /wake_up keeps failing."""
    run.reset(
        prime_mib=run.sizes.prime_mib, prime={"frees": "full", "reclaim": "error"}, study={"reclaim": "error"}
    )
    run.acquire_for_core(result.name)
    handoff_id, started = run.handoff(timeout_seconds=6)
    status = run.follow(handoff_id, 120)
    finish(run, result, status, started)
    context = status.get("error_context") or {}
    rollback = context.get("rollback") or {}
    result.check("handoff failed", "failed", status["phase"], status["phase"] == "failed")
    result.check(
        "the incomplete rollback is reported",
        "error.rollback.complete = false",
        rollback or "no rollback record",
        rollback.get("complete") is False,
    )
    wake_ups_at_end = len(run.calls("gaia-prime", "/wake_up"))
    time.sleep(12)
    wake_ups = len(run.calls("gaia-prime", "/wake_up"))
    result.figures["wake_up_calls"] = {"at_end": wake_ups_at_end, "12_s_later": wake_ups}
    result.check(
        "the failed reclaim is retried",
        "more /wake_up calls after the handoff ended",
        f"{wake_ups_at_end} → {wake_ups}",
        wake_ups > wake_ups_at_end,
    )
    ready = run.box.call("GET", "/ready")
    text = ready.text
    mentioned = "rollback" in text.lower() or handoff_id in text
    result.figures["ready"] = {"status": ready.status_code, "body": text[:2000]}
    result.check(
        "/ready reports the incomplete rollback",
        "503 naming the rollback",
        f"{ready.status_code}, {'names it' if mentioned else 'says nothing of it'}",
        ready.status_code == 503 and mentioned,
    )
    run.judge_logged(result, status)
    run.fakes["gaia-prime"].configure(reclaim="ok", held_mib=run.sizes.prime_mib)


def finish(run: Run, result: CaseResult, status: dict[str, Any], started: float) -> None:
    result.handoff = {
        "id": status["handoff_id"],
        "phase": status["phase"],
        "error": status.get("error"),
        "error_context": status.get("error_context"),
        "warnings": status.get("warnings"),
    }
    result.phases = [
        {"name": p["name"], "outcome": p["outcome"], "seconds": p["seconds"], "figures": p.get("figures")}
        for p in Run.phases(status)
    ]
    ended = epoch(status.get("completed_at"))
    result.figures["handoff_seconds"] = round(ended - started, 3) if ended else None


CASES: list[tuple[str, str, str, Callable[[Run, CaseResult], None]]] = [
    (
        "fresh_database_full_leak",
        "Full leak on a fresh database (Prime resident before anything)",
        "refused at cleanup; Study never signalled",
        fresh_database_full_leak,
    ),
    ("clean_release", "Clean release", "completed; Prime's memory gone before Study starts", clean_release),
    (
        "leak_recipient_fits",
        "Leak where the recipient would still fit (co-residence not allowed)",
        "refused at cleanup",
        leak_recipient_fits,
    ),
    ("partial_release", "Partial release (half freed)", "refused at cleanup", partial_release),
    (
        "grab_during_cleanup",
        "Another process grabs memory during cleanup",
        "refused, naming that pid",
        grab_during_cleanup,
    ),
    (
        "vllm_sleep_keeps_memory",
        "vLLM whose /sleep answers 200 but keeps its memory",
        "the ladder escalates; completed with Prime's memory gone",
        vllm_sleep_keeps_memory,
    ),
    (
        "memory_aware_acquire",
        'A memory-aware acquire (gpu "any") on the one GPU',
        "a need that fits is granted there; a larger one waits, naming why",
        memory_aware_acquire,
    ),
    (
        "reclaim_impossible",
        "Reclaim impossible during rollback",
        "incomplete rollback reported, retried, and a /ready problem",
        reclaim_impossible,
    ),
]


# --- running and reporting ------------------------------------------------------------------------


def run_cases(
    box: Box, sizes: Sizes, names: list[str], budget_seconds: float, started: float
) -> list[CaseResult]:
    run = Run(box, sizes)
    results = []
    for name, title, expected, body in CASES:
        if name not in names:
            continue
        result = CaseResult(name, title, expected)
        if time.monotonic() - started > budget_seconds:
            result.error = f"not run: the {budget_seconds:.0f} s budget was spent"
            results.append(result)
            continue
        began = time.monotonic()
        try:
            body(run, result)
        except Exception as exc:  # one broken case must not hide the others
            result.error = f"{exc!r}\n{traceback.format_exc()[-1500:]}"
        result.seconds = round(time.monotonic() - began, 2)
        results.append(result)
        print(f"{'PASS' if result.passed else 'FAIL'} {name} ({result.seconds} s)", flush=True)
    return results


def seconds(value: float | None) -> str:
    return "?" if value is None else f"{value:.3f} s"


def markdown(report: dict[str, Any]) -> str:
    gpu = report["gpu"]
    lines = [
        "# GPU truth",
        "",
        f"Backend `{report['backend']}`, GPU {gpu['index']} {gpu['name']} ({gpu['total_mib']} MiB, "
        f"reserved {gpu['reserved_mib']} MiB), service up in {report['service_start_seconds']} s, "
        f"all cases in {report['seconds']} s. Command: `{report['command']}`",
        "",
        f"**{report['passed']} of {len(report['cases'])} cases passed.**",
        "",
        "| case | expected | handoff | result |",
        "|---|---|---|---|",
    ]
    for case in report["cases"]:
        handoff = case["handoff"].get("phase", "—")
        lines.append(
            f"| {case['title']} | {case['expected']} | {handoff} | {'PASS' if case['passed'] else 'FAIL'} |"
        )
    for case in report["cases"]:
        lines += ["", f"## {case['title']}", "", f"Expected: {case['expected']}."]
        if case["error"]:
            lines += ["", f"Harness error: `{case['error'].splitlines()[0]}`"]
        lines += ["", "| check | expected | observed | |", "|---|---|---|---|"]
        for check in case["checks"]:
            observed = check["observed"].replace("|", "\\|").replace("\n", " ")[:160]
            lines.append(
                f"| {check['what']} | {check['expected']} | {observed} | {'✓' if check['passed'] else '✗'} |"
            )
        if case["phases"]:
            phases = ", ".join(f"{p['name']} {p['outcome']} {seconds(p['seconds'])}" for p in case["phases"])
            lines += ["", f"Phases: {phases}."]
        latency = case["figures"].get("freed_to_verified_seconds")
        if latency is not None:
            lines.append(f"Freed → verified: {latency} s.")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("nvml", "fake"), default="nvml")
    parser.add_argument("--out", required=True, help="directory for gpu-truth.json/.md and the logs")
    parser.add_argument("--gpu", type=int, default=0)
    parser.add_argument("--cases", default=",".join(name for name, *_ in CASES), help="comma-separated")
    parser.add_argument(
        "--budget-seconds", type=float, default=330, help="cases not started after this are skipped"
    )
    parser.add_argument(
        "--process-keys",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="write services.<name>.process.cmdline (attribution by command line); "
        "--no-process-keys leaves gaiaorch blind to who holds what (the weaker aggregate rule)",
    )
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    box = Box(args)
    report: dict[str, Any] = {
        "backend": args.backend,
        "command": " ".join(["python", *sys.argv]),
        "cases": [],
    }
    code = 2
    try:
        sizes = box.sizes()
        idle = box.truth.now()
        report["gpu"] = {
            **{"index": idle.index, "name": idle.name, "uuid": idle.uuid, "total_mib": idle.total_mib},
            **{"reserved_mib": idle.reserved_mib, "used_mib_idle": idle.used_mib},
        }
        report["sizes"] = asdict(sizes)
        box.truth.start()
        box.start_fakes(sizes)
        report["fakes"] = {name: {"pid": fake.pid, "url": fake.url} for name, fake in box.fakes.items()}
        report["service_start_seconds"] = box.start_service(sizes)
        results = run_cases(box, sizes, args.cases.split(","), args.budget_seconds, started)
        report["cases"] = [{**asdict(result), "passed": result.passed} for result in results]
        report["passed"] = sum(result.passed for result in results)
        code = 0 if all(result.passed for result in results) else 1
    except Exception as exc:
        report["harness_error"] = f"{exc!r}\n{traceback.format_exc()[-3000:]}"
        print(report["harness_error"], file=sys.stderr)
    finally:
        box.stop()
        report["seconds"] = round(time.monotonic() - started, 1)
        report["truth_errors"] = box.truth.errors[:20]
        report.setdefault("passed", 0)
        report.setdefault("service_start_seconds", None)
        report.setdefault("gpu", {"index": args.gpu, "name": "?", "total_mib": None, "reserved_mib": None})
        (out / "gpu-truth.json").write_text(json.dumps(report, indent=2, default=str))
        (out / "gpu-truth.md").write_text(markdown(report))
        if (box.var / "service.log").exists():
            shutil.copy(box.var / "service.log", out / "service.log")
        with (out / "fakes.log").open("w") as fakes_log:
            for log in sorted(box.var.glob("fake-*.log")):
                fakes_log.write(f"== {log.name}\n{log.read_text(errors='replace')}\n")
        shutil.rmtree(box.var, ignore_errors=True)
    print(
        f"{report['passed']} of {len(report['cases'])} cases passed; report in {out}/gpu-truth.md", flush=True
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
