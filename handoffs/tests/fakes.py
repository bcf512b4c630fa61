"""Fake gaia-core, gaia-prime and gaia-study: real HTTP servers on 127.0.0.1 speaking the contract.

The HTTP plumbing is bench/gpu_services.py's FakeHttpServer (the same the GPU harness's engine
fakes run on); these fakes hold no memory themselves, a test moves the fake GPU's figures.

Each route answers like the real service (ARCHITECTURE.md §5 "What gaiaorch calls") unless a test
scripts it otherwise: `fake.respond(path, status=500)`, `fake.respond(path, delay=2)`,
`fake.respond(path, hang=True)` (holds the request until the fake stops), `times=N` for only the
next N calls. `fake.on(path, hook)` runs a hook on each successful call, e.g. to drop VRAM in the
fake telemetry file like a real release would; a path with a query (`/sleep?level=2`) runs only
for calls with that query.
Every call is recorded with its JSON body; `fake.busy_seconds` sums the time spent answering.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

from bench.gpu_services import FakeHttpServer, Reply, Request
from gaiaorch.telemetry import write_fake

CONTRACT: dict[str, dict[str, dict[str, Any]]] = {
    "gaia-core": {
        "/gpu/release": {"ok": True, "message": "released", "state": "released"},
        "/gpu/reclaim": {"ok": True, "message": "reclaimed", "state": "active"},
        "/sleep/study-handoff": {"ok": True},
        "/health": {"status": "healthy"},
    },
    "gaia-prime": {
        "/sleep": {},
        "/wake_up": {},
        "/health": {},
    },
    "gaia-study": {
        "/study/gpu-ready": {"ok": True, "message": "training may start", "gpu_available": True},
        "/study/gpu-release": {"ok": True, "message": "released", "gpu_available": False},
        "/health": {"status": "healthy"},
    },
}


@dataclass
class Script:
    status: int = 200
    delay: float = 0.0
    hang: bool = False
    body: dict[str, Any] | None = None
    times: int | None = None  # answer like this this many times, then like the contract again


class FakeService(FakeHttpServer):
    """One GAIA service: answers its contract routes unless a test scripts them otherwise."""

    def __init__(self, name: str, routes: dict[str, dict[str, Any]]):
        super().__init__(name)
        self.routes = routes
        self.scripts: dict[str, Script] = {}
        self.hooks: dict[str, list[Callable[[], None]]] = {}

    def respond(self, path: str, **script: Any) -> None:
        self.scripts[path] = Script(**script)

    def on(self, path: str, hook: Callable[[], None]) -> None:
        self.hooks.setdefault(path, []).append(hook)

    def _script(self, path: str) -> Script:
        with self.lock:
            script = self.scripts.get(path, Script())
            if script.times is not None:
                script.times -= 1
                if script.times <= 0:
                    self.scripts.pop(path)
        return script

    def handle(self, request: Request) -> Reply:
        script = self._script(request.path)
        if script.hang:
            self.stopping.wait()
            return Reply(503, {"detail": "fake stopped while hanging"})
        if script.delay:
            time.sleep(script.delay)
        if request.path not in self.routes:
            return Reply(404, {"detail": f"{self.name} has no {request.path}"})
        if 200 <= script.status < 300:
            query = urlencode(request.query, doseq=True)
            for hook in [*self.hooks.get(request.path, []), *self.hooks.get(f"{request.path}?{query}", [])]:
                hook()
        return Reply(script.status, script.body if script.body is not None else self.routes[request.path])


class GpuProcess:
    """A real process standing for one GPU process: the fake file lists its pid, and attribution
    reads its command line in /proc as it would on a GPU box."""

    def __init__(self, label: str):
        self.label = label
        self.popen = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", label])
        self.pid = self.popen.pid

    def stop(self) -> None:
        self.popen.kill()
        self.popen.wait(timeout=10)


class FakeGpu:
    """The fake telemetry file, with the figures a test (or a fake's hook) moves.

    `set(used)` writes a GPU as NVML v1 shows it with no process list (attribution unavailable);
    `hold(pid, mib)` lists a real process holding memory, with the driver's reservation
    (`reserved_mib`, NVML v2), so attribution finds whose memory it is. One GPU (index 0) on its
    own; several GPUs sharing the file are made by FakeGpus.
    """

    def __init__(
        self,
        path: Path,
        total_mib: int = 24576,
        used_mib: int = 512,
        reserved_mib: int = 615,
        *,
        index: int = 0,
        uuid: str | None = None,
        box: FakeGpus | None = None,
    ):
        self.path = path
        self.index = index
        self.uuid = uuid or f"GPU-fake-{index}"
        self.total_mib = total_mib
        self.reserved_mib = reserved_mib
        self.box = box  # the GPUs this one shares the file with (None: alone in it)
        self.processes: dict[int, int] = {}
        self.lists_processes = False  # True once a test lists processes: then it reads like NVML v2
        self.set(used_mib)

    def set(self, used_mib: int) -> None:
        with self.box.lock if self.box else contextlib.nullcontext():
            self.used_mib = used_mib
            self._write()

    def hold(self, pid: int, mib: int) -> None:
        with self.box.lock if self.box else contextlib.nullcontext():
            self.lists_processes = True
            if mib:
                self.processes[pid] = mib
            else:
                self.processes.pop(pid, None)
            self.used_mib = sum(self.processes.values())
            self._write()

    def entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "index": self.index,
            "uuid": self.uuid,
            "total_mib": self.total_mib,
            "used_mib": self.used_mib,
        }
        if self.lists_processes:
            processes = [{"pid": pid, "used_mib": mib} for pid, mib in self.processes.items()]
            entry |= {"reserved_mib": self.reserved_mib, "processes": processes}
        return entry

    def _write(self) -> None:
        if self.box is not None:
            self.box.write()
        else:
            write_fake(self.path, [self.entry()])

    def setter(self, used_mib: int) -> Callable[[], None]:
        return lambda: self.set(used_mib)

    def holder(self, pid: int, mib: int) -> Callable[[], None]:
        return lambda: self.hold(pid, mib)


class FakeGpus:
    """Several GPUs in one fake telemetry file, as NVML lists a box with several cards: each a
    FakeGpu with its own index, UUID, total and processes (`box[1].hold(pid, mib)`). The file
    lists them in the order given, which need not be index order: gaiaorch goes by the index.
    """

    def __init__(self, path: Path, gpus: list[dict[str, Any]]):
        self.path = path
        # why: two fakes' hooks (two handoffs at once) change their GPUs and rewrite the one file
        self.lock = threading.RLock()
        self.gpus: list[FakeGpu] = []
        for options in gpus:
            self.gpus.append(FakeGpu(path, box=self, **options))
        self.write()

    def __getitem__(self, index: int) -> FakeGpu:
        return next(gpu for gpu in self.gpus if gpu.index == index)

    def write(self) -> None:
        with self.lock:
            write_fake(self.path, [gpu.entry() for gpu in self.gpus])


def stack_config(core: str, prime: str, study: str, **handoffs: Any) -> dict[str, Any]:
    """The GAIA stack of config/orchestrator.yaml, pointed at the fakes' URLs."""
    notify = {"method": "POST", "url": f"{core}/sleep/study-handoff"}  # gaia-core's sleep loop (v0.9)
    stack: dict[str, Any] = {
        # Settling over 40 ms and 2 samples keeps the tests fast; the rules are the same.
        "gpu": {"poll_ms": 20, "residual_mib": 512, "settle_window_ms": 40, "settle_samples": 2},
        "stacks": {
            "live": {"gpu_requester": "gaia-core"},
            "candidate": {"gpu_requester": "gaia-core-candidate"},
        },
        "services": {
            "gaia-prime": {
                "stack": "live",
                "health_url": f"{prime}/health",
                "gpu": True,
                "vram_mib": 10240,
                "release": {"http": {"method": "POST", "url": f"{prime}/sleep?level=1"}},
                "reclaim": {"http": {"method": "POST", "url": f"{prime}/wake_up"}},
            },
            "gaia-core": {
                "stack": "live",
                "health_url": f"{core}/health",
                "gpu": True,
                "depends_on": ["gaia-prime", "gaia-mcp"],
                "release": {"http": {"method": "POST", "url": f"{core}/gpu/release"}},
                "reclaim": {"http": {"method": "POST", "url": f"{core}/gpu/reclaim"}},
            },
            "gaia-mcp": {"stack": "live"},
            "gaia-study": {
                "stack": "live",
                "health_url": f"{study}/health",
                "gpu": True,
                "vram_mib": 16384,
                "ready": {"http": {"method": "POST", "url": f"{study}/study/gpu-ready"}},
                "release": {"http": {"method": "POST", "url": f"{study}/study/gpu-release"}},
            },
            "gaia-core-candidate": {
                "stack": "candidate",
                "health_url": f"{core}/health",
                "gpu": True,
                "vram_mib": [10240, 6144],
            },
            "gaia-web-candidate": {"stack": "candidate", "depends_on": ["gaia-core-candidate"]},
        },
        "handoffs": {
            "prime_to_study": {"source": "gaia-core", "destination": "gaia-study", "notify": notify},
            "study_to_prime": {"source": "gaia-study", "destination": "gaia-core", "notify": notify},
            "live_to_candidate": {
                "source": "gaia-core",
                "destination": "gaia-core-candidate",
                "release": "containers",
                "signal": "containers",
            },
            "candidate_to_live": {
                "source": "gaia-core-candidate",
                "destination": "gaia-core",
                "release": "containers",
                "signal": "containers",
            },
            "phase_timeout_seconds": 2,
            "http_timeout_seconds": 1,
            "stale_after_seconds": 3,
            "signal_retry_max_seconds": 1,
            "on_recipient_unacknowledged": "rollback",
            "accept_container_stopped_as_proof": False,
            **handoffs,
        },
    }
    for name, service in stack["services"].items():
        service.setdefault("compose_service", name)  # how the containers app finds each container
    return stack


class FakeContainers:
    """Stands in for the containers app's service layer: operations requested, then followed.

    `fail` maps an operation kind to its error; `hooks` maps a kind to a hook run when it ends
    (e.g. a stop freeing VRAM, a failed GPU start giving its lease back). Operations finish on
    their first poll.
    """

    def __init__(self):
        self.requested: list[tuple[str, list[str], dict]] = []
        self.fail: dict[str, str] = {}
        self.hooks: dict[str, Callable[[], None]] = {}
        self.operations: dict[int, SimpleNamespace] = {}

    def _new(self, kind: str, services: list[str], params: dict) -> SimpleNamespace:
        self.requested.append((kind, services, params))
        error = self.fail.get(kind, "")
        operation = SimpleNamespace(
            id=len(self.operations) + 1, kind=kind, services=services, status="running", error=error
        )
        self.operations[operation.id] = operation
        return operation

    def request_service_operation(self, kind: str, names: list[str], *, actor: str):
        return self._new(kind, names, {"actor": actor})

    def request_stack_operation(self, kind: str, *, actor: str, gpu_enabled: bool = False):
        return self._new(kind, [kind.split("_")[0]], {"actor": actor, "gpu_enabled": gpu_enabled})

    def operation(self, operation_id: int):
        operation = self.operations[operation_id]
        if operation.status == "running":
            operation.status = "failed" if operation.error else "succeeded"
            if operation.kind in self.hooks:
                self.hooks[operation.kind]()
        return operation

    def kinds(self) -> list[str]:
        return [kind for kind, _, _ in self.requested]
