"""Keep a few child processes running; stop all of them, and everything they started, together.

Used by `manage.py runstack`. Children are forked from this process, which has loaded Django and
the apps once: every child shares those pages until it writes to them, so the whole stack costs
little more than one Django process plus what each child really owns (docs/BENCHMARKS.md).

- Each child runs in a process group of its own, so signalling the group reaches what the child
  started (the qcluster's sentinel and workers), even after the child itself died.
- A child that exits is restarted after a backoff (1 s, doubling to 30 s; reset once it has run
  for 30 s), and what it left behind in its group is killed first: no orphan keeps consuming tasks.
- SIGINT or SIGTERM stops every child (SIGTERM to the child, which stops what it started in
  order), then SIGKILLs whatever is left in each group after the grace period, and exits 0.
- On Linux this process is a child subreaper, so orphans of a dead child are re-parented here and
  reaped, and the whole stack stays one process tree; and each child gets SIGTERM should this
  process itself be killed (SIGKILL, OOM), so no child outlives its supervisor.

The module needs only the standard library; the targets bring what they need.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

logger = logging.getLogger("gaiaorch.supervisor")

FIRST_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 30.0
STABLE_AFTER_SECONDS = 30.0
STOP_GRACE_SECONDS = 15.0
LEFTOVER_GRACE_SECONDS = 2.0
TICK_SECONDS = 0.1
PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
PR_SET_CHILD_SUBREAPER = 36


Target = Callable[[], object]


@dataclass
class Child:
    name: str
    target: Target
    pid: int = 0
    started_at: float = 0.0
    restart_at: float | None = None
    backoff: float = FIRST_BACKOFF_SECONDS
    exit_code: int | None = field(default=None)

    def start(self) -> None:
        self.pid = spawn(self.name, self.target)
        self.started_at, self.restart_at, self.exit_code = time.monotonic(), None, None
        logger.info("started %s (pid %d)", self.name, self.pid)

    @property
    def running(self) -> bool:
        return self.pid != 0 and self.exit_code is None


def spawn(name: str, target: Target) -> int:
    """Fork a child that runs `target` as the leader of a new session (and so of a new group).

    The child is named `gaiaorch-<name>` (what `ps -o comm`, `top` and /proc/<pid>/comm show), and
    so is everything it forks.
    """
    supervisor = os.getpid()
    sys.stdout.flush()  # or the child would print what is still buffered here a second time
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        # The child leaves through SystemExit, as a process that returns from main would: exit
        # handlers run (the qcluster waits for its sentinel in one) and nothing here resumes.
        raise SystemExit(_run_child(name, target, supervisor))
    return pid


def _run_child(name: str, target: Target, supervisor: int) -> int:
    os.setsid()
    prctl(PR_SET_NAME, ctypes.c_char_p(f"gaiaorch-{name}".encode()[:15]))
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor:  # the supervisor died before the line above
        return 1
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    try:
        target()
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


def signal_group(pgid: int, signum: int) -> bool:
    """Signal a whole process group; False when nothing is left in it."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    return True


def exit_code(status: int) -> int:
    return os.waitstatus_to_exitcode(status)


class Supervisor:
    def __init__(self, children: dict[str, Target]):
        self.children = [Child(name, target) for name, target in children.items()]
        self.stopping = False

    def run(self) -> int:
        become_subreaper()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._request_stop)
        for child in self.children:
            child.start()
        while not self.stopping:
            self._reap()
            self._restart_due()
            time.sleep(TICK_SECONDS)
        self._stop_all()
        return 0

    def _request_stop(self, signum, frame) -> None:
        self.stopping = True

    def _reap(self) -> None:
        """Collect every exited child (ours, or an orphan re-parented here) without blocking."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = next((c for c in self.children if c.pid == pid and c.exit_code is None), None)
            if child is not None:
                self._exited(child, exit_code(status))

    def _exited(self, child: Child, code: int) -> None:
        child.exit_code = code
        if self.stopping:
            return
        ran = time.monotonic() - child.started_at
        if ran >= STABLE_AFTER_SECONDS:
            child.backoff = FIRST_BACKOFF_SECONDS
        self._kill_leftovers(child)
        child.restart_at = time.monotonic() + child.backoff
        logger.warning(
            "%s (pid %d) exited with code %d after %.1f s; restarting it in %.0f s",
            child.name,
            child.pid,
            code,
            ran,
            child.backoff,
        )
        child.backoff = min(child.backoff * 2, MAX_BACKOFF_SECONDS)

    def _kill_leftovers(self, child: Child) -> None:
        """What the dead child started (e.g. qcluster workers) must not outlive it."""
        if not signal_group(child.pid, signal.SIGTERM):
            return
        deadline = time.monotonic() + LEFTOVER_GRACE_SECONDS
        while time.monotonic() < deadline and signal_group(child.pid, 0):
            self._reap_orphans()
            time.sleep(TICK_SECONDS)
        if signal_group(child.pid, signal.SIGKILL):
            logger.warning("killed what %s (pid %d) left running", child.name, child.pid)

    def _reap_orphans(self) -> None:
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0] != 0:
                pass

    def _restart_due(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.restart_at is not None and now >= child.restart_at:
                child.start()

    def _stop_all(self) -> None:
        logger.info("stopping %s", ", ".join(child.name for child in self.children))
        for child in self.children:
            if child.running:
                os.kill(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while time.monotonic() < deadline and any(signal_group(c.pid, 0) for c in self.children):
            self._reap()
            time.sleep(TICK_SECONDS)
        for child in self.children:
            if signal_group(child.pid, signal.SIGKILL):
                logger.warning("%s did not stop within %.0f s; killed", child.name, STOP_GRACE_SECONDS)
        self._reap_orphans()


def become_subreaper() -> None:
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def prctl(option: int, value: int | ctypes.c_char_p) -> None:
    """Linux process controls; elsewhere process groups alone do the job."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)
