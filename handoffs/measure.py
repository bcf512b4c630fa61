"""Measuring freed VRAM: the threshold and the sampling loop of the cleanup phase.

Free of models and of Django app loading (it only reads settings through gaiaorch.telemetry), so
bench/nvml_probe.py drives this exact loop against a real GPU.

A service saying "released" proves nothing (vLLM's sleep once freed 1.7 of 10.4 GB). Cleanup is
done when NVML shows used ≤ idle baseline + residual allowance, or free ≥ what the recipient
declared it needs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from gaiaorch import telemetry
from gaiaorch.telemetry import GpuSample
from handoffs.errors import PhaseFailed


@dataclass(frozen=True)
class Threshold:
    baseline_mib: int | None
    residual_mib: int
    need_mib: int

    @property
    def max_used_mib(self) -> int | None:
        return None if self.baseline_mib is None else self.baseline_mib + self.residual_mib

    def met_by(self, gpu: GpuSample) -> bool:
        by_baseline = self.max_used_mib is not None and gpu.used_mib <= self.max_used_mib
        by_need = self.need_mib > 0 and gpu.free_mib >= self.need_mib
        return by_baseline or by_need

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "max_used_mib": self.max_used_mib}


def measure(gpu: int) -> GpuSample:
    sample = telemetry.sample()
    found = sample.gpu(gpu) if sample.available else None
    if found is None:
        reason = sample.reason or f"telemetry reports no GPU {gpu}"
        raise PhaseFailed(f"GPU telemetry is unavailable: {reason}", gpu=gpu, telemetry=sample.backend)
    return found


def wait_for_cleanup(
    gpu: int, threshold: Threshold, *, deadline: float, poll_seconds: float, pause: Callable[[float], None]
) -> dict[str, Any]:
    """Sample until the threshold is met; the figures on success, PhaseFailed with them at the deadline."""
    started = time.monotonic()
    samples = 0
    while True:
        current = measure(gpu)
        samples += 1
        figures = {
            "used_mib": current.used_mib,
            "free_mib": current.free_mib,
            "total_mib": current.total_mib,
            "samples": samples,
            "seconds": round(time.monotonic() - started, 3),
            **threshold.as_dict(),
        }
        if threshold.met_by(current):
            return figures
        if time.monotonic() + poll_seconds > deadline:
            raise PhaseFailed(
                f"VRAM on GPU {gpu} was not freed in time: {current.used_mib} MiB used, "
                f"{current.free_mib} MiB free; needed used ≤ {threshold.max_used_mib} MiB "
                f"or free ≥ {threshold.need_mib} MiB",
                gpu=gpu,
                **figures,
            )
        pause(poll_seconds)
