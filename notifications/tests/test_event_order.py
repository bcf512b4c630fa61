"""Event ids become visible in id order on PostgreSQL even when writers of different GPUs commit
at once: a reader tailing `id > last seen` through the feed (the relays, the WebSocket replay,
`/events?after=`) skips none; and writers of different GPUs never wait for each other."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, transaction

from notifications import feed
from notifications.models import Event
from notifications.services import record_event
from notifications.tests.samples import TEST_PING

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]

WRITERS = 6
EVENTS_EACH = 25


def test_it_never_lets_a_tailing_reader_skip_an_event_while_writers_commit_at_once():
    stop = threading.Event()
    errors: list[BaseException] = []

    def write(number: int) -> None:
        try:
            for step in range(EVENTS_EACH):
                with transaction.atomic():
                    record_event(TEST_PING, f"writer {number} step {step}", subject=("gpu", number))
                    time.sleep(0.002)  # commit a little after the id was taken, as a decision does
        except BaseException as exc:  # reported by the test below
            errors.append(exc)
        finally:
            connection.close()

    seen: list[int] = []

    def tail() -> None:
        last = 0
        try:
            while not stop.is_set() or Event.objects.filter(id__gt=last).exists():
                ids = [item.id for item in feed.items_after(last, None, 500)]
                seen.extend(ids)
                last = ids[-1] if ids else last
        finally:
            connection.close()

    reader = threading.Thread(target=tail)
    writers = [threading.Thread(target=write, args=(n,)) for n in range(WRITERS)]
    reader.start()
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
    stop.set()
    reader.join(60)
    assert errors == []
    written = list(Event.objects.filter(type=TEST_PING).order_by("id").values_list("id", flat=True))
    assert len(written) == WRITERS * EVENTS_EACH
    assert seen == written  # every id, each once, in order: none became visible after a later one


def test_it_lets_a_writer_commit_while_another_writer_is_still_in_flight():
    first_written, may_commit = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def slow_writer() -> None:
        try:
            with transaction.atomic():
                record_event(TEST_PING, "GPU 0, not yet committed", subject=("gpu", 0))
                first_written.set()
                may_commit.wait(30)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    slow = threading.Thread(target=slow_writer)
    slow.start()
    assert first_written.wait(30)
    try:
        started = time.monotonic()
        with transaction.atomic():
            later = record_event(TEST_PING, "GPU 1, committed first", subject=("gpu", 1))
        assert time.monotonic() - started < 2  # it did not wait for the writer in flight
        horizon: list[int] = []
        reader = threading.Thread(target=lambda: (horizon.append(feed.latest_event_id()), connection.close()))
        reader.start()
        reader.join(0.5)
        assert horizon == []  # a reader waits: the earlier id is still in flight
    finally:
        may_commit.set()
        slow.join(30)
    reader.join(30)
    assert errors == []
    earlier = Event.objects.get(title="GPU 0, not yet committed")
    assert earlier.id < later.id
    assert horizon == [later.id]
    assert [item.id for item in feed.items_after(earlier.id - 1, None, 10)] == [earlier.id, later.id]
