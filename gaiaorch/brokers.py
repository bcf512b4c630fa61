"""django-q2's ORM broker, woken when a task is queued instead of waiting for its next poll.

The ORM broker (the embedded default, and PostgreSQL without Redis) finds tasks by reading its
table; its pusher sleeps `poll` seconds whenever the table is empty, so a handoff queued just
after a read waited that long before a worker saw it. Here each pusher listens on the `queue`
wake-up channel (gaiaorch.wakeups) before its first read; queuing a task wakes every pusher of
this host once the task's row has committed, and a waiting pusher reads the table at once. The
poll stays as the fallback for what a wake-up cannot reach (a pusher on another host sharing a
PostgreSQL broker).

A wake-up is never lost: the socket is bound and drained before each read, so one sent during
a read leaves it readable and the pusher reads again without waiting.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta

from django.db import close_old_connections, transaction
from django.utils import timezone
from django_q.brokers.orm import ORM
from django_q.conf import Conf
from django_q.models import OrmQ

from gaiaorch import wakeups
from gaiaorch.connections import keep_in_this_thread

CHANNEL = "queue"


def wake_pushers() -> None:
    wakeups.wake(CHANNEL)


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
        wakeups.drain(listener)  # before the read: a wake-up arriving during it is kept for the wait
        tasks = self.take_due()
        if tasks:
            return tasks
        wakeups.wait(listener, Conf.POLL)
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
            self._listener, self._listener_pid = wakeups.listen(CHANNEL), os.getpid()
            keep_in_this_thread(checked=True)  # the pusher reads the table at every wake-up
        return self._listener
