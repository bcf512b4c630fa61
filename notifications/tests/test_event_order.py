"""Event ids become visible in id order on PostgreSQL even when writers of different GPUs commit
at once: a reader tailing `id > last seen` (the relays, the feed, `/events?after=`) skips none."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, transaction

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
                ids = list(Event.objects.filter(id__gt=last).order_by("id").values_list("id", flat=True))
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
