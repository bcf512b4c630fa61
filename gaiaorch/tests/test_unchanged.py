"""Reads kept while the database is unchanged: the version moves with every commit, from this
connection or any other, and a kept value is answered again only while it stays."""

from __future__ import annotations

import threading

import pytest
from django.db import connections, transaction

from gaiaorch.unchanged import WhileUnchanged, database_version
from leases.models import Gpu

# Each pass of the suite runs these on its own database (the PostgreSQL one under -m postgres).
ON_EITHER_DATABASE = pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgresql", marks=[pytest.mark.slow, pytest.mark.postgres])]
)
pytestmark = [pytest.mark.django_db(transaction=True), ON_EITHER_DATABASE]


def in_another_connection(work) -> None:
    """Run `work` on a thread of its own, so on a connection of its own."""

    def run() -> None:
        try:
            work()
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()


def add_gpu(index: int) -> None:
    Gpu.objects.create(index=index)


def test_it_has_no_version_inside_a_transaction(database):
    with transaction.atomic():
        assert database_version() is None


def test_it_keeps_the_version_while_nothing_is_committed(database):
    first = database_version()
    assert Gpu.objects.count() == 0
    assert database_version() == first is not None


def test_it_moves_the_version_when_this_connection_commits(database):
    first = database_version()
    add_gpu(7)
    assert database_version() != first


def test_it_moves_the_version_when_another_connection_commits(database):
    first = database_version()
    in_another_connection(lambda: add_gpu(7))
    assert database_version() != first


def test_it_answers_a_kept_value_until_something_is_committed(database):
    kept: WhileUnchanged[list[int]] = WhileUnchanged()
    builds = []

    def indexes() -> list[int]:
        builds.append(1)
        return sorted(Gpu.objects.values_list("index", flat=True))

    assert kept.read(indexes) == kept.read(indexes) == []
    assert len(builds) == 1
    in_another_connection(lambda: add_gpu(3))
    assert kept.read(indexes) == [3]
    add_gpu(4)
    assert kept.read(indexes) == [3, 4]
    assert len(builds) == 3


def test_it_builds_anew_for_another_key_or_a_value_no_longer_good(database):
    kept: WhileUnchanged[object] = WhileUnchanged()
    first, second = object(), object()
    value = kept.read(object, key=first)
    assert kept.read(object, key=first) is value
    assert kept.read(object, key=second) is not value
    again = kept.read(object, key=second)
    assert kept.read(object, key=second, still_good=lambda held: held is not again) is not again


def test_it_keeps_nothing_inside_a_transaction(database):
    kept: WhileUnchanged[object] = WhileUnchanged()
    with transaction.atomic():
        assert kept.read(object) is not kept.read(object)


def test_it_keeps_a_value_per_thread(database):
    kept: WhileUnchanged[object] = WhileUnchanged()
    mine = kept.read(object)
    theirs = []
    in_another_connection(lambda: theirs.extend([kept.read(object), kept.read(object)]))
    assert theirs[0] is theirs[1] is not mine
    assert kept.read(object) is mine
