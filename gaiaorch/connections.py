"""Database connections that a long-lived thread keeps from one piece of work to the next.

Django closes a connection at the end of each request, and django-q2 before each task, once it is
older than CONN_MAX_AGE (0 here: at once). A thread that does piece after piece (a serving thread,
a django-q2 worker, the pusher) keeps its connections instead, so no piece waits for a new one. A
broken connection is still closed by Django's own checks; with `checked`, the first query of each
piece first makes sure the connection still answers (one round trip on PostgreSQL, none on SQLite),
so a database restarted while the thread was idle costs a reconnect, not a failed task.
"""

from __future__ import annotations

import threading

from django.db import connections
from django.db.backends.signals import connection_created

_kept = threading.local()


def keep_in_this_thread(*, checked: bool = False) -> None:
    """From now on this thread keeps the connections it opens (and those it has open)."""
    _kept.checked = checked
    for connection in connections.all(initialized_only=True):
        if connection.connection is not None:
            _keep(connection)


def _keep(connection) -> None:
    connection.close_at = None
    if _kept.checked:
        connection.health_check_enabled = True


def _on_created(sender, connection, **kwargs) -> None:
    if hasattr(_kept, "checked"):
        _keep(connection)


connection_created.connect(_on_created, dispatch_uid="gaiaorch.connections.keep")
