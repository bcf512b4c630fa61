"""The idle VRAM baseline: configured, or the lowest use measured while no lease was active.

Never a fixed absolute figure: an idle desktop GPU shows 2.2 GB used, an idle H100 480 MiB.
"""

from __future__ import annotations

from collections.abc import Callable

from django.utils import timezone

from gaiaorch import telemetry
from handoffs.errors import PhaseFailed
from handoffs.measure import Threshold
from handoffs.models import GpuBaseline
from leases import holdings


def baseline_mib(gpu: int, configured: int | None) -> int | None:
    """The configured baseline, else the lowest idle use measured here or by the lease app."""
    if configured is not None:
        return configured
    measured = [
        GpuBaseline.objects.filter(gpu_index=gpu).values_list("used_mib", flat=True).first(),
        holdings.idle_baseline(gpu),
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
