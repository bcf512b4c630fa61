"""Django's SQLite backend, with the writers of one process taking turns on a lock of their own.

SQLite lets one writer at a time in. A transaction (BEGIN IMMEDIATE) that finds the write lock
taken sleeps in SQLite's busy handler (1, 2, 5, 10 … up to 100 ms between tries) and so often
starts well after the lock was free again: with several serving threads a handover or a lease
cycle waited tens of milliseconds for nothing. Here the transactions of one process first take a
threading lock, so a writer starts the moment the one before it in this process commits; writers
in other processes (the ticker, the worker) still meet at SQLite's own lock, as before.
"""

from __future__ import annotations

import threading

from django.db.backends.sqlite3 import base

# why: one writer at a time is all SQLite allows; queueing a process's writers here hands the
# write lock on at commit instead of after a busy-handler sleep.
WRITERS = threading.Lock()
WAIT_SECONDS = 30.0  # as the busy timeout: past it, the transaction tries SQLite's lock anyway


class DatabaseWrapper(base.DatabaseWrapper):
    holds_writers = False

    def _start_transaction_under_autocommit(self):
        taken = WRITERS.acquire(timeout=WAIT_SECONDS)
        try:
            super()._start_transaction_under_autocommit()
        except BaseException:
            if taken:
                WRITERS.release()
            raise
        self.holds_writers = taken

    def _let_writers_go(self) -> None:
        if self.holds_writers:
            self.holds_writers = False
            WRITERS.release()

    def _commit(self):
        try:
            return super()._commit()
        finally:
            self._let_writers_go()

    def _rollback(self):
        try:
            return super()._rollback()
        finally:
            self._let_writers_go()

    def _close(self):
        try:
            return super()._close()
        finally:
            self._let_writers_go()
