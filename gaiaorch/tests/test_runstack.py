"""The README's run command brings up web, worker and ticker, restarts one that dies, and a signal
stops all of them and everything they started."""

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, seconds: float = 30) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            return httpx.get(url, timeout=1).json()
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {seconds} s")


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_it_starts_all_processes_and_stops_them_on_a_signal(tmp_path, signum):
    port = free_port()
    env = {**os.environ, "GAIAORCH_VAR_DIR": str(tmp_path), "GAIAORCH_PORT": str(port)}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    stack = subprocess.Popen([sys.executable, "manage.py", "runstack"], cwd=ROOT, env=env)
    try:
        assert wait_healthy(f"http://127.0.0.1:{port}/health")["status"] == "healthy"
        children = children_of(stack.pid)
        assert len(children) == 3
        stack.send_signal(signum)
        assert stack.wait(timeout=30) == 0
        for child in children:
            with pytest.raises(ProcessLookupError):
                os.kill(child, 0)
    finally:
        stack.kill()


def tree_of(pid: int) -> set[int]:
    found, frontier = set(), [pid]
    while frontier:
        current = frontier.pop()
        found.add(current)
        frontier.extend(children_of(current))
    return found


def name_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except FileNotFoundError:  # listed by ps, reaped before we read it
        return ""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (ProcessLookupError, FileNotFoundError):  # gone, or reaped between the two looks
        return False


def wait_until(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {seconds} s")


def heartbeat_consumed_at(var_dir: Path) -> str | None:
    with sqlite3.connect(var_dir / "gaiaorch.sqlite3", timeout=10) as db:
        row = db.execute("SELECT consumed_at FROM gaiaorch_workerheartbeat WHERE id = 1").fetchone()
    return row[0] if row else None


@pytest.mark.slow
def test_it_restarts_a_killed_worker_without_orphans_and_stops_the_whole_tree(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "GAIAORCH_VAR_DIR": str(tmp_path),
        "GAIAORCH_PORT": str(port),
        "GAIAORCH_WORKER_HEARTBEAT_INTERVAL": "1",
        "GAIAORCH_LOG_LEVEL": "WARNING",
    }
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    stack = subprocess.Popen([sys.executable, "manage.py", "runstack"], cwd=ROOT, env=env)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/health")
        by_name = {name_of(pid): pid for pid in children_of(stack.pid)}
        assert set(by_name) == {"gaiaorch-web", "gaiaorch-worker", "gaiaorch-ticker"}
        worker = by_name["gaiaorch-worker"]
        others = {by_name["gaiaorch-web"], by_name["gaiaorch-ticker"]}
        left_behind = wait_until(
            lambda: len(tree_of(worker)) > 3 and tree_of(worker) - {worker}, 30, "the qcluster forking"
        )
        wait_until(lambda: heartbeat_consumed_at(tmp_path), 30, "a first heartbeat consumed")

        os.kill(worker, signal.SIGKILL)
        killed_at = heartbeat_consumed_at(tmp_path)
        wait_until(
            lambda: not any(alive(pid) for pid in left_behind), 15, "the dead worker's children ending"
        )
        restarted = wait_until(
            lambda: [p for p in children_of(stack.pid) if name_of(p) == "gaiaorch-worker" and p != worker],
            15,
            "a new worker",
        )
        assert len(restarted) == 1
        wait_until(lambda: heartbeat_consumed_at(tmp_path) > killed_at, 30, "the new worker consuming tasks")
        assert all(alive(pid) for pid in others)  # web and ticker were never touched
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200

        everything = tree_of(stack.pid)
        stack.send_signal(signal.SIGTERM)
        assert stack.wait(timeout=30) == 0
        assert [pid for pid in everything if alive(pid)] == []
    finally:
        stack.kill()


def supervise(children: str, **popen) -> subprocess.Popen:
    """A supervisor process of its own over `children` (Python source of a dict of targets)."""
    script = (
        "import logging, sys, time\n"
        "from gaiaorch.supervisor import Supervisor\n"
        "logging.basicConfig(level=logging.INFO)\n"
        f"sys.exit(Supervisor({children}).run())\n"
    )
    return subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, **popen)


def test_it_backs_off_restarting_a_child_that_keeps_dying_and_logs_each_restart():
    supervisor = supervise('{"flaky": lambda: sys.exit(3)}', stderr=subprocess.PIPE, text=True)
    time.sleep(4)  # starts at 0, 1 and 3 s
    supervisor.send_signal(signal.SIGTERM)
    _, log = supervisor.communicate(timeout=20)
    assert supervisor.returncode == 0
    delays = re.findall(r"flaky \(pid \d+\) exited with code 3 after [\d.]+ s; restarting it in (\d+) s", log)
    assert delays[:3] == ["1", "2", "4"], log


def test_it_takes_its_children_along_when_the_supervisor_itself_is_killed():
    supervisor = supervise('{"sleeper": lambda: time.sleep(60)}')
    try:
        [sleeper] = wait_until(lambda: children_of(supervisor.pid), 10, "the child starting")
        supervisor.kill()
        supervisor.wait(timeout=10)
        wait_until(lambda: not alive(sleeper), 10, "the child ending with its supervisor")
    finally:
        supervisor.kill()
