"""Measured GPU memory, the only proof that VRAM was really freed.

Per GPU: total / used / free and the driver's own reservation (NVML memory info v2; with only v1
the reservation is unknown and counted in "used"), plus the processes NVML lists with their
memory (compute and graphics lists merged by pid). Index and UUID are NVML's: its index follows
PCI bus order, which is CUDA's order only with CUDA_DEVICE_ORDER=PCI_BUS_ID.

Backends (settings.GPU_BACKEND / GAIAORCH_GPU_BACKEND):
- `auto` (the default): `nvml` once NVML initialises in this process; until then `none`, with
  NVML's reason, tried again every AUTO_RETRY_SECONDS (a driver loaded after start is found).
- `nvml`: NVML through nvidia-ml-py (its module is named `pynvml`). Memory figures work inside
  containers; process lists are empty in another PID namespace or a VM, which
  `GpuSample.visibility()` says (see gaiaorch.attribution).
- `fake`: reads the JSON file settings.FAKE_GPU_FILE on every sample, for demos and tests:
  {"gpus": [{"index": 0, "total_mib": 24576, "used_mib": 9000,          # required
             "uuid": "GPU-fake-0", "name": "Fake GPU",                   # optional
             "reserved_mib": 615,                                        # optional (v2 figure)
             "processes": [{"pid": 4242, "used_mib": 8400}],             # optional
             "process_error": ""}]}                                      # optional
  Without `reserved_mib` the file reads like NVML v1 (reservation unknown, part of used_mib).
- `none`: no telemetry.

`sample()` never raises: a failure is a Telemetry with available=False and the reason. This
module imports nothing from Django until sample() runs, so the fake GPU services (bench/) can
write the fake file with it in a bare Python process.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, overload

MIB = 1024 * 1024
AUTO_RETRY_SECONDS = 30.0
# Memory in use that no listed process accounts for, below which the process list still counts
# as complete: per-process figures and the device total are rounded separately by the driver.
UNLISTED_TOLERANCE_MIB = 256


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    used_mib: int | None  # None: the driver does not report per-process memory (e.g. WDDM)


@dataclass(frozen=True)
class Visibility:
    """Whether the process list accounts for the memory in use, and if not, why."""

    visible: bool
    reason: str = ""


@dataclass(frozen=True)
class GpuSample:
    index: int
    uuid: str
    name: str
    total_mib: int
    used_mib: int  # v2: without the driver's reservation; v1 (reserved_mib None): with it
    free_mib: int
    reserved_mib: int | None = None
    processes: tuple[GpuProcess, ...] = ()
    process_error: str = ""  # why NVML could not list processes at all

    @property
    def listed_mib(self) -> int:
        return sum(process.used_mib or 0 for process in self.processes)

    @property
    def unlisted_mib(self) -> int:
        """Memory in use that no listed process accounts for (with v1 it includes the reservation)."""
        return max(0, self.used_mib - self.listed_mib)

    def process(self, pid: int) -> GpuProcess | None:
        return next((process for process in self.processes if process.pid == pid), None)

    def visibility(self, tolerance_mib: int = UNLISTED_TOLERANCE_MIB) -> Visibility:
        where = f"GPU {self.index}"
        if self.process_error:
            return Visibility(False, f"NVML cannot list the processes on {where}: {self.process_error}")
        unknown = [process.pid for process in self.processes if process.used_mib is None]
        if unknown:
            return Visibility(False, f"NVML lists processes on {where} without their memory (pids {unknown})")
        if self.unlisted_mib <= tolerance_mib:
            return Visibility(True)
        if self.reserved_mib is None:
            return Visibility(
                False,
                f"{self.unlisted_mib} MiB in use on {where} belong to no listed process, and the driver "
                "reports no reservation figure (NVML memory info v1) to tell them apart",
            )
        if not self.processes:
            return Visibility(
                False,
                f"NVML lists no process on {where} while {self.used_mib} MiB beyond the driver's "
                "reservation are in use: the processes run in another PID namespace (run gaiaorch "
                "with pid: host) or in a VM that hides them",
            )
        return Visibility(
            False,
            f"{self.unlisted_mib} MiB in use on {where} belong to processes NVML does not list "
            "(another PID namespace?)",
        )

    def as_dict(self) -> dict[str, Any]:
        visibility = self.visibility()
        return {
            "index": self.index,
            "uuid": self.uuid,
            "name": self.name,
            "total_mb": self.total_mib,
            "used_mb": self.used_mib,
            "free_mb": self.free_mib,
            "reserved_mb": self.reserved_mib,
            "processes": [{"pid": p.pid, "used_mib": p.used_mib} for p in self.processes],
            "processes_visible": visibility.visible,
            "processes_reason": visibility.reason,
        }


@dataclass(frozen=True)
class Telemetry:
    available: bool
    reason: str = ""
    gpus: tuple[GpuSample, ...] = ()
    backend: str = "none"

    def gpu(self, index: int) -> GpuSample | None:
        return next((gpu for gpu in self.gpus if gpu.index == index), None)


class TelemetryError(Exception):
    pass


# --- the fake backend's file ------------------------------------------------------------------


@overload
def _count(raw: dict, key: str, where: str, required: Literal[True] = True) -> int: ...
@overload
def _count(raw: dict, key: str, where: str, required: bool) -> int | None: ...
def _count(raw: dict, key: str, where: str, required: bool = True) -> int | None:
    value = raw.get(key)
    if value is None and not required:
        return None
    if value is None:
        raise TelemetryError(f"a GPU entry needs integer index, total_mib and used_mib ({key!r} is missing)")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TelemetryError(f"{where}: {key} must be a non-negative integer")
    return value


def _fake_processes(raw: Any, where: str) -> tuple[GpuProcess, ...]:
    if not isinstance(raw, list) or not all(isinstance(entry, dict) for entry in raw):
        raise TelemetryError(f"{where}: processes must be a list of {{pid, used_mib}} objects")
    processes = {}
    for entry in raw:
        pid = _count(entry, "pid", where)
        processes[pid] = GpuProcess(pid, _count(entry, "used_mib", where, required=False))
    return tuple(processes.values())


def _fake_gpu(raw: Any) -> GpuSample:
    if not isinstance(raw, dict):
        raise TelemetryError("each entry of 'gpus' must be an object")
    index = _count(raw, "index", "a GPU entry")
    where = f"GPU {index}"
    total, used = _count(raw, "total_mib", where), _count(raw, "used_mib", where)
    reserved = _count(raw, "reserved_mib", where, required=False)
    if used + (reserved or 0) > total:
        raise TelemetryError(f"{where}: used_mib (+ reserved_mib) must be between 0 and total_mib")
    return GpuSample(
        index=index,
        uuid=str(raw.get("uuid", f"GPU-fake-{index}")),
        name=str(raw.get("name", "Fake GPU")),
        total_mib=total,
        used_mib=used,
        free_mib=total - used - (reserved or 0),
        reserved_mib=reserved,
        processes=_fake_processes(raw.get("processes", []), where),
        process_error=str(raw.get("process_error", "")),
    )


def read_fake(path: Path) -> tuple[GpuSample, ...]:
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise TelemetryError(f"fake telemetry file {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise TelemetryError(f"fake telemetry file {path} is unreadable: {exc}") from None
    gpus = document.get("gpus") if isinstance(document, dict) else None
    if not isinstance(gpus, list):
        raise TelemetryError(f"fake telemetry file {path} must hold {{'gpus': [...]}}")
    return tuple(sorted((_fake_gpu(raw) for raw in gpus), key=lambda gpu: gpu.index))


def write_fake(path: Path, gpus: list[dict[str, Any]]) -> None:
    """Replace the fake file atomically, so a sampler never reads half a document."""
    partial = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
    partial.write_text(json.dumps({"gpus": gpus}))
    partial.replace(path)


def update_fake(path: Path, change: Callable[[list[dict[str, Any]]], None]) -> None:
    """Read, change in place and write back the fake file's GPU list, one process at a time.

    Several processes (the fake GPU services of bench/gpu_services.py) add and remove their own
    process entries; the lock file serialises their read-modify-write cycles.
    """
    with open(path.with_name(f"{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # why: two services freeing at once must not lose an update
        gpus = json.loads(path.read_text())["gpus"]
        change(gpus)
        write_fake(path, gpus)


# --- NVML --------------------------------------------------------------------------------------


class Nvml:
    """pynvml, initialised once per process; a failed init is retried on the next sample."""

    _lock = threading.Lock()  # nvmlInit is not safe to race from two threads
    _ready = False
    _failed: tuple[float, str] | None = None  # when the last initialisation failed, and why

    @classmethod
    def unavailable_reason(cls, retry_after_seconds: float = AUTO_RETRY_SECONDS) -> str:
        """ "" once NVML is initialised; else why not (tried again at most every retry_after_seconds)."""
        if cls._ready:
            return ""
        failed = cls._failed
        if failed is not None and time.monotonic() - failed[0] < retry_after_seconds:
            return failed[1]
        try:
            cls._init()
        except ImportError as exc:
            cls._failed = (time.monotonic(), f"pynvml is not installed: {exc}")
        except Exception as exc:  # NVMLError_LibraryNotFound, _DriverNotLoaded, …
            cls._failed = (time.monotonic(), f"NVML did not initialise: {exc}")
        else:
            return ""
        return cls._failed[1]

    @classmethod
    def _init(cls):
        import pynvml

        with cls._lock:
            if not cls._ready:
                pynvml.nvmlInit()
                cls._ready = True
        return pynvml

    @classmethod
    def read(cls) -> tuple[GpuSample, ...]:
        try:
            nvml = cls._init()
            return tuple(cls._device(nvml, index) for index in range(nvml.nvmlDeviceGetCount()))
        except ImportError as exc:
            raise TelemetryError(f"pynvml is not installed: {exc}") from None
        except Exception as exc:  # NVMLError and driver/library load failures alike
            raise TelemetryError(f"NVML failed: {exc}") from None

    @staticmethod
    def _device(nvml, index: int) -> GpuSample:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        total_mib, used_mib, free_mib, reserved_mib = _memory(nvml, handle)
        processes, process_error = _processes(nvml, handle)
        return GpuSample(
            index=index,
            uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
            name=_text(nvml.nvmlDeviceGetName(handle)),
            total_mib=total_mib,
            used_mib=used_mib,
            free_mib=free_mib,
            reserved_mib=reserved_mib,
            processes=processes,
            process_error=process_error,
        )


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _memory(nvml, handle) -> tuple[int, int, int, int | None]:
    """(total, used, free, reserved) in MiB: v2 keeps the driver's reservation apart; v1 does not."""
    try:
        memory = nvml.nvmlDeviceGetMemoryInfo(handle, version=nvml.nvmlMemory_v2)
        return memory.total // MIB, memory.used // MIB, memory.free // MIB, memory.reserved // MIB
    except Exception:  # an older driver or pynvml: NotSupported, FunctionNotFound, no version argument
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        total_mib, used_mib = memory.total // MIB, memory.used // MIB
        return total_mib, used_mib, total_mib - used_mib, None


PROCESS_LISTS = ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses")


def _processes(nvml, handle) -> tuple[tuple[GpuProcess, ...], str]:
    """Compute and graphics processes merged by pid, and the error when neither list answers.

    A process in both lists is one process: it keeps the larger of its two figures. One list
    failing alone is tolerated; memory held by a process it would have shown stays unlisted, which
    GpuSample.visibility() reports.
    """
    found: dict[int, int | None] = {}
    errors = []
    for query in PROCESS_LISTS:
        try:
            running = getattr(nvml, query)(handle)
        except Exception as exc:
            errors.append(f"{query}: {exc}")
            continue
        for process in running:
            used = None if process.usedGpuMemory is None else process.usedGpuMemory // MIB
            known = found.get(process.pid)
            found[process.pid] = used if known is None else max(known, used or 0)
    error = "; ".join(errors) if len(errors) == len(PROCESS_LISTS) else ""
    return tuple(GpuProcess(pid, used) for pid, used in sorted(found.items())), error


def sample() -> Telemetry:
    from django.conf import settings

    backend = settings.GPU_BACKEND
    if backend == "auto":
        why = Nvml.unavailable_reason()
        if why:
            return Telemetry(False, reason=f"telemetry is off: GPU backend auto found no NVML ({why})")
        backend = "nvml"
    try:
        if backend == "nvml":
            return Telemetry(True, gpus=Nvml.read(), backend=backend)
        if backend == "fake":
            return Telemetry(True, gpus=read_fake(Path(settings.FAKE_GPU_FILE)), backend=backend)
    except TelemetryError as exc:
        return Telemetry(False, reason=str(exc), backend=backend)
    return Telemetry(False, reason="telemetry is off (GAIAORCH_GPU_BACKEND=none)", backend="none")
