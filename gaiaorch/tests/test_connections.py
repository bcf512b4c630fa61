"""Connections kept from one piece of work to the next (gaiaorch.connections): by the serving
threads, and by django-q2's workers and pusher, checked before each piece."""

from __future__ import annotations

import threading

import pytest
from django.db import close_old_connections, connection
from django_q.signals import post_spawn

from notifications.models import Event

pytestmark = pytest.mark.django_db(transaction=True)


def in_a_thread(work):
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(value=work()))
    thread.start()
    thread.join(timeout=30)
    return result["value"]


def connection_after_a_piece_of_work(keep) -> tuple[bool, bool]:
    """(still open after Django's end-of-work check, checked before the next piece's query)."""
    keep()
    Event.objects.exists()
    opened = connection.connection
    close_old_connections()
    kept = connection.connection is opened and opened is not None
    checked = connection.health_check_enabled  # type: ignore[attr-defined]  # set by connect(), unstubbed
    connection.close()
    return kept, checked


def test_it_keeps_a_worker_processs_connection_and_checks_it_before_each_task():
    def spawned_worker() -> None:
        post_spawn.send(sender="django_q", proc_name="Process-1:1")

    assert in_a_thread(lambda: connection_after_a_piece_of_work(spawned_worker)) == (True, True)


def test_it_keeps_a_serving_threads_connection_unchecked():
    from gaiaorch import connections

    assert in_a_thread(lambda: connection_after_a_piece_of_work(connections.keep_in_this_thread)) == (
        True,
        False,
    )


def test_it_lets_any_other_thread_close_its_connection_after_its_work():
    assert in_a_thread(lambda: connection_after_a_piece_of_work(lambda: None))[0] is False
