"""Unknown tenants: processes holding GPU memory outside every configured service.

The ticker samples the GPUs every `gpu.tenant_interval_seconds` and attributes their processes
(gaiaorch.attribution). An unattributed process holding memory is a tenant: its appearance is
one `gpu.tenant_appeared` event (pid, command, MiB, GPU) and a WARNING line, its departure one
`gpu.tenant_gone` event — once per appearance, not per sample: a row per (GPU, pid) remembers it
between samples and across tickers (a unique constraint). A pid whose owner cannot be told
(another PID namespace, Docker unreachable) is not called a tenant: who holds it is unknown.
"""

from __future__ import annotations

import logging

from django.db import IntegrityError, transaction
from django.utils import timezone

from gaiaorch import attribution, telemetry
from gaiaorch.attribution import ProcessOwner
from handoffs import events
from handoffs.models import GpuTenant
from notifications.models import Severity
from notifications.services import record_event

logger = logging.getLogger(__name__)


def watch() -> dict[str, list]:
    """Record tenants that appeared and went since the last sample; what changed."""
    sample = telemetry.sample()
    if not sample.available:
        return {"appeared": [], "gone": []}
    seen = {
        (gpu.gpu, owner.pid): owner
        for gpu in attribution.current(sample).gpus
        for owner in gpu.unattributed
        if (owner.used_mib or 0) > 0
    }
    known = {(row.gpu_index, row.pid): row for row in GpuTenant.objects.all()}
    appeared = [key for key in seen if key not in known and _appeared(key[0], seen[key])]
    gone = [key for key in known if key not in seen and _gone(known[key])]
    for key in seen.keys() & known.keys():
        _grew(known[key], seen[key])
    return {"appeared": appeared, "gone": gone}


def _appeared(gpu: int, owner: ProcessOwner) -> bool:
    mib = owner.used_mib or 0
    try:
        with transaction.atomic():
            GpuTenant.objects.create(gpu_index=gpu, pid=owner.pid, command=owner.command, used_mib=mib)
            record_event(
                events.GPU_TENANT_APPEARED,
                f"{owner.describe()} on GPU {gpu}, outside any service",
                owner.command,
                severity=Severity.WARNING,
                data={"gpu": gpu, "pid": owner.pid, "command": owner.command, "used_mib": mib},
                subject=("gpu", gpu),
            )
    except IntegrityError:  # another ticker recorded this appearance first
        return False
    logger.warning(
        "GPU %s: unknown tenant pid %s holds %s MiB outside any service: %s",
        gpu,
        owner.pid,
        mib,
        owner.command,
    )
    return True


def _gone(row: GpuTenant) -> bool:
    with transaction.atomic():
        # Only the ticker that deletes the row tells of the departure.
        deleted, _ = GpuTenant.objects.filter(pk=row.pk).delete()
        if deleted:
            record_event(
                events.GPU_TENANT_GONE,
                f"pid {row.pid} no longer holds memory on GPU {row.gpu_index}",
                row.command,
                data={"gpu": row.gpu_index, "pid": row.pid, "command": row.command, "used_mib": row.used_mib},
                subject=("gpu", row.gpu_index),
            )
    return bool(deleted)


def _grew(row: GpuTenant, owner: ProcessOwner) -> None:
    GpuTenant.objects.filter(pk=row.pk, used_mib__lt=owner.used_mib or 0).update(
        used_mib=owner.used_mib or 0, last_seen_at=timezone.now()
    )
