"""The README's run command brings up web, worker and ticker, and a signal stops all of them."""

import os
import signal
import socket
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
