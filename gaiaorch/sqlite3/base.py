"""Django's SQLite backend, with the writers of one process taking turns on a lock of their own.

SQLite lets one writer at a time in. A transaction (BEGIN IMMEDIATE) that finds the write lock
taken sleeps in SQLite's busy handler (1, 2, 5, 10 … up to 100 ms between tries) and so often
starts well after the lock was free again: with several serving threads a handover or a lease
cycle waited tens of milliseconds for nothing. Here the transactions of one process first take a
threading lock, so a writer starts the moment the one before it in this process commits; writers
in other processes (the ticker, the worker) still meet at SQLite's own lock, as before.
"""

from __future__ import annotations

import os
import threading

from django.db.backends.sqlite3 import base

# why: one writer at a time is all SQLite allows; queueing a process's writers here hands the
# write lock on at commit instead of after a busy-handler sleep.
WRITERS = threading.Lock()
WAIT_SECONDS = 30.0  # as the busy timeout: past it, the transaction tries SQLite's lock anyway


def _fresh_after_fork() -> None:
    """A forked child (the supervisor's children, the worker's) has no other thread that could
    hold its parent's lock: it starts with a free one."""
    global WRITERS
    WRITERS = threading.Lock()  # why: the parent's lock may be held by a thread the child lacks


os.register_at_fork(after_in_child=_fresh_after_fork)


class DatabaseWrapper(base.DatabaseWrapper):
    holding: threading.Lock | None = None  # the lock this connection's transaction took

    def _start_transaction_under_autocommit(self):
        lock = WRITERS
        taken = lock.acquire(timeout=WAIT_SECONDS)
        try:
            super()._start_transaction_under_autocommit()  # type: ignore[misc]  # Django's private hook, not in the stubs
        except BaseException:
            if taken:
                lock.release()
            raise
        self.holding = lock if taken else None

    def _let_writers_go(self) -> None:
        lock, self.holding = self.holding, None
        if lock is not None:
            lock.release()

    def _commit(self):
        try:
            return super()._commit()  # type: ignore[misc]  # Django's private hook, not in the stubs
        finally:
            self._let_writers_go()

    def _rollback(self):
        try:
            return super()._rollback()  # type: ignore[misc]  # Django's private hook, not in the stubs
        finally:
            self._let_writers_go()

    def _close(self):
        try:
            return super()._close()  # type: ignore[misc]  # Django's private hook, not in the stubs
        finally:
            self._let_writers_go()
