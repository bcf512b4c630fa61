"""Measured GPU memory, the only proof that VRAM was really freed.

Backends (settings.GPU_BACKEND / GAIAORCH_GPU_BACKEND):
- `nvml`: pynvml. Memory figures work inside containers; process lists are best-effort only
  (empty in other PID namespaces), so nothing may rely on them alone.
- `fake`: reads the JSON file settings.FAKE_GPU_FILE on every sample, for demos and tests:
  {"gpus": [{"index": 0, "uuid": "GPU-fake-0", "name": "Fake GPU", "total_mib": 24576, "used_mib": 512}]}
- `none`: no telemetry.

`sample()` never raises: a failure is a Telemetry with available=False and the reason.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings

MIB = 1024 * 1024


@dataclass(frozen=True)
class GpuSample:
    index: int
    uuid: str
    name: str
    total_mib: int
    used_mib: int
    free_mib: int
    processes: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "uuid": self.uuid,
            "name": self.name,
            "total_mb": self.total_mib,
            "used_mb": self.used_mib,
            "free_mb": self.free_mib,
            "processes": self.processes,
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


def _fake_gpu(raw: Any) -> GpuSample:
    if not isinstance(raw, dict):
        raise TelemetryError("each entry of 'gpus' must be an object")
    try:
        total, used = int(raw["total_mib"]), int(raw["used_mib"])
        index = int(raw["index"])
    except (KeyError, TypeError, ValueError) as exc:
        raise TelemetryError(f"a GPU entry needs integer index, total_mib and used_mib ({exc})") from None
    if not 0 <= used <= total:
        raise TelemetryError(f"GPU {index}: used_mib must be between 0 and total_mib")
    return GpuSample(
        index=index,
        uuid=str(raw.get("uuid", f"GPU-fake-{index}")),
        name=str(raw.get("name", "Fake GPU")),
        total_mib=total,
        used_mib=used,
        free_mib=total - used,
        processes=list(raw.get("processes", [])),
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
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps({"gpus": gpus}))
    partial.replace(path)


class Nvml:
    """pynvml, initialised once per process; a failed init is retried on the next sample."""

    _lock = threading.Lock()  # nvmlInit is not safe to race from two threads
    _ready = False

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
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        total_mib, used_mib = memory.total // MIB, memory.used // MIB
        return GpuSample(
            index=index,
            uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
            name=_text(nvml.nvmlDeviceGetName(handle)),
            total_mib=total_mib,
            used_mib=used_mib,
            free_mib=total_mib - used_mib,
            processes=_processes(nvml, handle),
        )


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _processes(nvml, handle) -> list[dict[str, Any]]:
    """Best effort: empty inside containers and VMs (other PID namespaces)."""
    try:
        running = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
    except Exception:
        return []
    return [{"pid": proc.pid, "used_mib": (proc.usedGpuMemory or 0) // MIB} for proc in running]


def sample() -> Telemetry:
    backend = settings.GPU_BACKEND
    try:
        if backend == "nvml":
            return Telemetry(True, gpus=Nvml.read(), backend=backend)
        if backend == "fake":
            return Telemetry(True, gpus=read_fake(Path(settings.FAKE_GPU_FILE)), backend=backend)
    except TelemetryError as exc:
        return Telemetry(False, reason=str(exc), backend=backend)
    return Telemetry(False, reason="telemetry is off (GAIAORCH_GPU_BACKEND=none)", backend="none")
