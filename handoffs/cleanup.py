"""Verifying by measurement that VRAM was freed: thresholds, the idle baseline, the polling loop.

A service saying "released" proves nothing (vLLM's sleep once freed 1.7 of 10.4 GB). Cleanup is
done when NVML shows used ≤ idle baseline + residual allowance, or free ≥ what the recipient
declared it needs. The baseline is configured (gpu.baseline_mib) or the lowest use measured while
no lease was active; never a fixed absolute figure.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from django.utils import timezone

from gaiaorch import telemetry
from gaiaorch.telemetry import GpuSample
from handoffs import ownership
from handoffs.models import GpuBaseline
from handoffs.strategies import PhaseFailed


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


def baseline_mib(gpu: int, configured: int | None) -> int | None:
    """The configured baseline, else the lowest idle use measured here or by the lease app."""
    if configured is not None:
        return configured
    measured = [
        GpuBaseline.objects.filter(gpu_index=gpu).values_list("used_mib", flat=True).first(),
        ownership.idle_baseline_seen_by_leases(gpu),
    ]
    known = [value for value in measured if value is not None]
    return min(known) if known else None


def threshold_for(
    gpu: int, *, configured_baseline: int | None, residual_mib: int, need_mib: int
) -> Threshold:
    found = Threshold(baseline_mib(gpu, configured_baseline), residual_mib, need_mib)
    if found.baseline_mib is None and found.need_mib <= 0:
        raise PhaseFailed(
            f"GPU {gpu} has no measured idle baseline and the recipient declares no vram_mib: "
            "set gpu.baseline_mib or the recipient's vram_mib",
            gpu=gpu,
        )
    return found


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


def record_baselines(idle_gpus: Callable[[list[int]], list[int]]) -> dict[int, int]:
    """Lower each idle GPU's stored baseline to what telemetry shows now. Returns what was stored."""
    sample = telemetry.sample()
    if not sample.available:
        return {}
    idle = set(idle_gpus([gpu.index for gpu in sample.gpus]))
    stored = {}
    for gpu in sample.gpus:
        if gpu.index in idle:
            stored[gpu.index] = _lower_baseline(gpu.index, gpu.used_mib)
    return stored


def _lower_baseline(gpu: int, used_mib: int) -> int:
    row, created = GpuBaseline.objects.get_or_create(gpu_index=gpu, defaults={"used_mib": used_mib})
    if created:
        return used_mib
    # A conditional UPDATE, so two tickers sampling at once never raise the figure back up.
    GpuBaseline.objects.filter(gpu_index=gpu, used_mib__gt=used_mib).update(
        used_mib=used_mib, measured_at=timezone.now()
    )
    return min(row.used_mib, used_mib)
