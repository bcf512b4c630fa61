"""A GPU appearing in telemetry or gone from it is a state change: it writes its event, once."""

from __future__ import annotations

import pytest

from leases import services
from notifications.models import Event

pytestmark = pytest.mark.django_db


def presence() -> list[tuple[str, int]]:
    rows = Event.objects.filter(type__startswith="gpu.").order_by("id")
    return [(event.type, event.data["gpu"]) for event in rows]


def test_it_records_each_gpu_that_telemetry_reports_for_the_first_time_once(fake_gpus):
    services.sync_gpus()
    services.sync_gpus()
    assert presence() == [("gpu.appeared", 0), ("gpu.appeared", 1)]
    appeared = Event.objects.filter(type="gpu.appeared").first()
    assert appeared.data["total_mib"] == 24576 and appeared.subject_kind == "gpu"


def test_it_records_a_gpu_gone_from_working_telemetry_and_its_return(fake_gpus):
    services.sync_gpus()
    fake_gpus.set(512)
    services.sync_gpus()
    services.sync_gpus()
    assert presence()[2:] == [("gpu.disappeared", 1)]
    assert Event.objects.get(type="gpu.disappeared").severity == "warning"
    fake_gpus.set(512, 512)
    services.sync_gpus()
    assert presence()[3:] == [("gpu.appeared", 1)]


def test_it_never_reports_a_gpu_gone_while_telemetry_fails(settings, fake_gpus):
    services.sync_gpus()
    settings.GPU_BACKEND = "none"
    services.sync_gpus()
    assert [kind for kind, _ in presence()] == ["gpu.appeared", "gpu.appeared"]
