"""The ORM broker's wake-up (gaiaorch.brokers, gaiaorch.wakeups): a queued task reaches a waiting
pusher at once, after its row commits, and a wake-up is neither lost nor sent to one that has gone."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest
from django.db import connection, transaction
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.models import OrmQ

from gaiaorch import brokers, wakeups

pytestmark = pytest.mark.django_db(transaction=True)

FAR = 30.0  # a wait no test may sit through: only a wake-up ends it in time


@pytest.fixture
def pusher(monkeypatch):
    """This process as a pusher: its wake-up socket bound where queuing processes look."""
    broker = brokers.WakeableORM()
    listener = broker.listener()
    assert listener is not None
    yield broker, listener
    wakeups.close(listener)


def received(listener: socket.socket) -> bool:
    try:
        return bool(listener.recv(64))
    except BlockingIOError:
        return False


def test_it_is_the_broker_of_the_embedded_default():
    assert isinstance(get_broker(), brokers.WakeableORM)


def test_it_waits_beside_the_sqlite_database(pusher):
    _, listener = pusher
    database = connection.settings_dict["NAME"]
    assert wakeups.directory() == Path(f"{database}-wake")
    assert Path(listener.getsockname()).parent == wakeups.directory()
    assert Path(listener.getsockname()).name.startswith(f"queue-{os.getpid()}-")
    assert wakeups.directory().stat().st_mode & 0o077 == 0  # nobody else may wake (or see) it


def test_it_ends_a_waiting_pushers_wait_when_a_task_is_queued(pusher):
    broker, listener = pusher
    ended = threading.Event()

    def wait() -> None:
        wakeups.wait(listener, FAR)
        ended.set()

    waiting = threading.Thread(target=wait)
    waiting.start()
    time.sleep(0.05)
    broker.enqueue("a task")
    assert ended.wait(FAR / 3)
    waiting.join()


def test_it_wakes_only_once_the_tasks_row_has_committed(pusher):
    broker, listener = pusher
    with transaction.atomic():
        broker.enqueue("a task")
        assert not received(listener)  # a pusher woken now would not see the row
    assert received(listener)


def test_it_keeps_a_wake_up_that_arrives_while_the_pusher_reads(pusher):
    _, listener = pusher
    wakeups.drain(listener)
    brokers.wake_pushers()  # as if queued between the drain and the end of the read
    started = time.monotonic()
    wakeups.wait(listener, FAR)
    assert time.monotonic() - started < FAR / 3


def test_it_hands_the_queued_task_to_the_pusher_and_locks_it(pusher):
    broker, _ = pusher
    pk = broker.enqueue("a task")
    assert broker.dequeue() == [(pk, "a task")]
    assert OrmQ.objects.get(pk=pk).lock > timezone.now()
    assert not broker.take_due()  # locked: another cluster does not take it too


def test_it_forgets_the_socket_of_a_pusher_that_has_gone():
    directory = wakeups.directory()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    gone = directory / "queue-999999999-1.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(gone))
    brokers.wake_pushers()  # nobody reads there any more
    assert not gone.exists()


def test_it_polls_when_the_path_is_too_long_for_a_socket(monkeypatch, tmp_path):
    monkeypatch.setattr(wakeups, "directory", lambda: tmp_path / ("d" * 120))
    assert wakeups.listen("queue") is None
    started = time.monotonic()
    wakeups.wait(None, 0.01)  # the poll alone
    assert time.monotonic() - started >= 0.01


def test_it_leaves_the_connection_of_the_thread_that_queues_open():
    OrmQ.objects.exists()
    opened = connection.connection
    brokers.WakeableORM().enqueue("a task")
    assert connection.connection is opened  # django-q2's ORM broker closes it (close_old_connections)


def test_it_wakes_only_the_listeners_of_the_channel():
    queue, events = wakeups.listen("queue"), wakeups.listen("events")
    try:
        wakeups.wake("events", b"42")
        assert wakeups.drain(events) == [b"42"]
        assert wakeups.drain(queue) == []
    finally:
        wakeups.close(queue)
        wakeups.close(events)
    assert not list(wakeups.directory().glob(f"*-{os.getpid()}-*.sock"))  # closing removes them
