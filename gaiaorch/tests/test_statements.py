"""Reads compiled once (gaiaorch.statements): the rows the queryset itself would read, the values
of each run bound in their places, one compilation per database, and the lock kept."""

import uuid

import pytest
from django.db import DatabaseError, connection, transaction
from django.db.models import BooleanField, Count, ExpressionWrapper, Max, Q
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from gaiaorch.statements import CompiledRead, insert, save_fields
from leases.models import Gpu, Lease, LeaseStatus
from notifications.models import Event

pytestmark = pytest.mark.django_db

BY_INDEX = CompiledRead(
    lambda index: Gpu.objects.filter(index=index, present=True).order_by("pk")[:1],
    index=Gpu._meta.get_field("index"),
)
LIVE_ON = CompiledRead(
    lambda gpu: Lease.objects.live().filter(gpu=gpu).order_by("arrival"), gpu=Lease._meta.get_field("gpu")
)
BY_STATUS = CompiledRead(
    lambda gpu: (
        Lease.objects.filter(gpu=gpu)
        .annotate(late=ExpressionWrapper(Q(arrival__gte=2), output_field=BooleanField()))
        .values("status", "late")
        .annotate(count=Count("pk"), last=Max("arrival"))
        .order_by("status", "-late")
    ),
    gpu=Lease._meta.get_field("gpu"),
)
GPU_INDEX_OF = CompiledRead(
    lambda lease: Lease.objects.filter(pk=lease).values_list("gpu__index", "requester")[:1],
    lease=Lease._meta.pk,
)


def make_gpus(count: int) -> list[Gpu]:
    return [Gpu.objects.create(index=n, uuid=f"GPU-{n}", name="test", total_mib=1024) for n in range(count)]


def lease(gpu: Gpu, requester: str, status: str, arrival: int) -> Lease:
    now = timezone.now()
    active = status == LeaseStatus.ACTIVE
    ended = status not in LeaseStatus.live()
    return Lease.objects.create(
        gpu=gpu,
        requester=requester,
        status=status,
        arrival=arrival,
        requested_at=now,
        fencing_token=arrival if active else None,
        granted_at=now if active else None,
        ended_at=now if ended else None,
    )


def test_it_reads_what_the_queryset_reads_with_each_runs_own_values():
    gpus = make_gpus(3)
    assert [g.pk for g in BY_INDEX.models(index=2)] == [gpus[2].pk]
    assert [g.pk for g in BY_INDEX.models(index=0)] == [gpus[0].pk]
    assert BY_INDEX.models(index=9) == []
    Gpu.objects.filter(index=1).update(present=False)
    assert BY_INDEX.models(index=1) == []  # the statement's own constants are kept


def test_it_builds_model_instances_with_their_fields_converted():
    gpus = make_gpus(2)
    held = lease(gpus[1], "a", LeaseStatus.ACTIVE, 1)
    waiting = lease(gpus[1], "b", LeaseStatus.WAITING, 2)
    lease(gpus[1], "c", LeaseStatus.RELEASED, 3)
    lease(gpus[0], "d", LeaseStatus.WAITING, 4)
    rows = LIVE_ON.models(gpu=gpus[1].pk)
    assert [(row.id, row.requester, row.status) for row in rows] == [
        (held.id, "a", LeaseStatus.ACTIVE),
        (waiting.id, "b", LeaseStatus.WAITING),
    ]
    assert isinstance(rows[0].id, uuid.UUID)
    assert rows[0].requested_at == Lease.objects.get(pk=held.pk).requested_at  # a datetime, not text


LIVE_WITH_GPU = CompiledRead(lambda: Lease.objects.live().select_related("gpu").order_by("arrival"))


def test_it_attaches_what_select_related_names_without_another_statement():
    gpus = make_gpus(2)
    lease(gpus[1], "a", LeaseStatus.ACTIVE, 1)
    lease(gpus[0], "b", LeaseStatus.WAITING, 2)
    lease(gpus[0], "c", LeaseStatus.RELEASED, 3)
    Gpu.objects.filter(pk=gpus[0].pk).update(next_fencing_token=7)
    with CaptureQueriesContext(connection) as queries:
        rows = LIVE_WITH_GPU.models()
        seen = [(row.requester, row.gpu.index, row.gpu.next_fencing_token, row.gpu.uuid) for row in rows]
    assert seen == [("a", 1, 1, "GPU-1"), ("b", 0, 7, "GPU-0")]
    assert len(queries) == 1
    assert rows[0].gpu.updated_at == Gpu.objects.get(index=1).updated_at  # converted too


def test_it_answers_a_values_row_or_none():
    gpus = make_gpus(2)
    held = lease(gpus[1], "a", LeaseStatus.ACTIVE, 1)
    assert GPU_INDEX_OF.first_row(lease=held.id) == (1, "a")
    assert GPU_INDEX_OF.first_row(lease=str(held.id)) == (1, "a")
    assert GPU_INDEX_OF.first_row(lease=uuid.uuid4()) is None


def test_it_answers_grouped_rows_as_mappings_of_their_names():
    gpus = make_gpus(2)
    for arrival, status in enumerate([LeaseStatus.ACTIVE, LeaseStatus.WAITING, LeaseStatus.WAITING]):
        lease(gpus[0], f"r{arrival}", status, arrival)
    lease(gpus[1], "r9", LeaseStatus.WAITING, 1)
    rows = BY_STATUS.dicts(gpu=gpus[0].pk)
    assert rows == [
        {"status": LeaseStatus.ACTIVE, "late": False, "count": 1, "last": 0},
        {"status": LeaseStatus.WAITING, "late": True, "count": 1, "last": 2},
        {"status": LeaseStatus.WAITING, "late": False, "count": 1, "last": 1},
    ]
    assert BY_STATUS.dicts(gpu=gpus[1].pk) == [
        {"status": LeaseStatus.WAITING, "late": False, "count": 1, "last": 1}
    ]


def test_it_compiles_once_and_then_runs_only_the_statement():
    make_gpus(1)
    read = CompiledRead(lambda index: Gpu.objects.filter(index=index), index=Gpu._meta.get_field("index"))
    read.models(index=0)
    with CaptureQueriesContext(connection) as queries:
        read.models(index=0)
    assert len(queries) == 1
    assert len(read._compiled) == 1


def test_it_refuses_a_parameter_the_statement_does_not_use_once():
    read = CompiledRead(lambda index: Gpu.objects.all(), index=Gpu._meta.get_field("index"))
    with pytest.raises(ValueError, match="appears 0 times"):
        read.models(index=0)


@pytest.mark.postgres
def test_it_keeps_the_row_lock_of_a_select_for_update_on_postgresql():
    make_gpus(1)
    locked = CompiledRead(
        lambda index: Gpu.objects.filter(index=index).select_for_update(), index=Gpu._meta.get_field("index")
    )
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        assert len(locked.models(index=0)) == 1
    assert any(query["sql"].endswith(" FOR UPDATE") for query in queries.captured_queries), (
        queries.captured_queries
    )


def test_it_updates_only_the_named_fields_of_one_row():
    gpus = make_gpus(2)
    gpus[0].next_arrival, gpus[0].name = 41, "renamed in memory only"
    save_fields(gpus[0], ["next_arrival"])
    fresh = Gpu.objects.get(pk=gpus[0].pk)
    assert (fresh.next_arrival, fresh.name) == (41, "test")
    assert Gpu.objects.get(pk=gpus[1].pk).next_arrival == 1


def test_it_refuses_an_update_that_reaches_no_row():
    gpu = make_gpus(1)[0]
    Gpu.objects.filter(pk=gpu.pk).delete()
    with pytest.raises(DatabaseError, match="was not updated"):
        save_fields(gpu, ["next_arrival"])


def test_it_inserts_rows_and_gives_them_the_keys_the_database_made():
    gpu = make_gpus(1)[0]
    now = timezone.now()
    leases = [Lease(gpu=gpu, requester=name, arrival=n, requested_at=now) for n, name in enumerate("ab")]
    insert(leases)
    assert [lease._state.adding for lease in leases] == [False, False]
    assert sorted(Lease.objects.values_list("requester", flat=True)) == ["a", "b"]
    events = [Event(type="lease.requested", title=f"e{n}", created_at=now) for n in range(3)]
    insert(events)
    assert [event.id for event in events] == list(
        Event.objects.filter(title__startswith="e").order_by("id").values_list("id", flat=True)
    )
    insert([])  # nothing to write: no statement
