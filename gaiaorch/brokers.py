"""django-q2's ORM broker, woken when a task is queued instead of waiting for its next poll.

The ORM broker (the embedded default, and PostgreSQL without Redis) finds tasks by reading its
table; its pusher sleeps `poll` seconds whenever the table is empty, so a handoff queued just
after a read waited that long before a worker saw it. Here each pusher binds a Unix datagram
socket, `<pid>.sock` in the wake directory (`gaiaorch.sqlite3-wake/` beside the SQLite database,
`<var>/wake/` on PostgreSQL), before its first read; queuing a task sends one byte to every socket
there once the task's row has committed, and a waiting pusher reads the table at once.
The poll stays as the fallback for what a wake-up cannot reach (a pusher on another host
sharing a PostgreSQL broker, a var directory whose path is too long for a socket).

A wake-up is never lost: the socket is bound and drained before each read, so one sent during
a read leaves it readable and the pusher reads again without waiting.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import time
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import close_old_connections, connections, transaction
from django.utils import timezone
from django_q.brokers.orm import ORM
from django_q.conf import Conf
from django_q.models import OrmQ

from gaiaorch.connections import keep_in_this_thread

logger = logging.getLogger(__name__)

SOCKET_PATH_MAX = 107  # bytes of an AF_UNIX path on Linux, without the final NUL
WAKE = b"!"


def wake_dir() -> Path:
    """Where the pushers of this queue wait: beside the SQLite database, as its -wal file is (every
    process sharing the file shares the directory), else in this host's var directory."""
    database = connections[Conf.ORM]
    if database.vendor == "sqlite" and not database.is_in_memory_db():  # type: ignore[attr-defined]  # SQLite's
        name = Path(database.settings_dict["NAME"])
        return name.with_name(f"{name.name}-wake")
    return Path(settings.VAR_DIR) / "wake"


def wake_pushers() -> None:
    """One byte to every pusher waiting on this var directory; never raises."""
    try:
        entries = [entry.path for entry in os.scandir(wake_dir()) if entry.name.endswith(".sock")]
    except FileNotFoundError:
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sender:
        sender.setblocking(False)
        for path in entries:
            try:
                sender.sendto(WAKE, path)
            except BlockingIOError:
                pass  # its buffer already holds wake-ups it has not read: it will read the table
            except (ConnectionRefusedError, FileNotFoundError):
                with contextlib.suppress(OSError):
                    os.unlink(path)  # nobody is bound there any more: its pusher has gone
            except OSError:
                logger.debug("could not wake the pusher at %s; it polls", path, exc_info=True)


class WakeableORM(ORM):
    """The ORM broker whose empty reads wait on a wake-up socket, at most `poll` seconds."""

    _listener: socket.socket | None = None
    _listener_pid = 0

    @staticmethod
    def get_connection(list_key: str | None = None):
        # The ORM broker closes the caller's old connections here, on every call: the thread that
        # queues a task (a request's, after its commit) would open a new one for its next query.
        # The processes that live on the broker check theirs themselves (dequeue, the monitor).
        return OrmQ.objects.using(Conf.ORM)

    def enqueue(self, task):
        pk = super().enqueue(task)
        # After commit: a pusher woken before the row is visible would find nothing and go back
        # to waiting a whole poll.
        transaction.on_commit(wake_pushers, using=Conf.ORM)
        return pk

    def dequeue(self):
        listener = self.listener()
        close_old_connections()  # a broken one is replaced; a working one is kept (listener())
        drain(listener)  # before the read: a wake-up arriving during it is kept for the wait below
        tasks = self.take_due()
        if tasks:
            return tasks
        wait(listener, Conf.POLL)
        return None

    def take_due(self) -> list[tuple[int, str]]:
        """The ORM broker's read: due tasks, each locked by a conditional UPDATE (one of two
        racing clusters gets it)."""
        connection = self.get_connection()
        due = connection.filter(key=self.list_key, lock__lt=timezone.now())[: Conf.BULK]
        until = timezone.now() + timedelta(seconds=Conf.RETRY)
        return [
            (task.pk, task.payload)
            for task in due
            if connection.filter(id=task.id, lock=task.lock).update(lock=until)
        ]

    def listener(self) -> socket.socket | None:
        """This process's wake-up socket, bound on first use (a forked pusher binds its own)."""
        if self._listener_pid != os.getpid():
            self._listener, self._listener_pid = bind_listener(), os.getpid()
            keep_in_this_thread(checked=True)  # the pusher reads the table at every wake-up
        return self._listener


def bind_listener() -> socket.socket | None:
    """A non-blocking datagram socket at <wake directory>/<pid>.sock, or None (the pusher polls)."""
    path = wake_dir() / f"{os.getpid()}.sock"
    if len(os.fsencode(path)) > SOCKET_PATH_MAX:
        logger.warning("%s is too long for a socket; the worker finds tasks by polling only", path)
        return None
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # only this account may wake it
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # left by an earlier process with this pid
        listener.bind(str(path))
    except OSError:
        listener.close()
        logger.warning("could not bind %s; the worker finds tasks by polling only", path, exc_info=True)
        return None
    listener.setblocking(False)
    return listener


def drain(listener: socket.socket | None) -> None:
    if listener is None:
        return
    with contextlib.suppress(BlockingIOError):
        while listener.recv(64):
            pass


def wait(listener: socket.socket | None, seconds: float) -> None:
    """Until a wake-up arrives or `seconds` pass."""
    if listener is None:
        time.sleep(seconds)
    else:
        select.select([listener], [], [], seconds)
