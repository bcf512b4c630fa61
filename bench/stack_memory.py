"""Memory of the whole `manage.py runstack` process tree, idle, as RSS and PSS.

Starts runstack on a throw-away var directory (SQLite, no Redis unless REDIS_URL is set), waits
until /ready answers and the tree has settled, then reads /proc/<pid>/smaps_rollup of every
process in the tree. PSS (proportional set size) counts a page shared by N processes as 1/N in
each, so the sum is what the stack really costs the machine; RSS counts shared pages in every
process that maps them.

    .venv/bin/python bench/stack_memory.py                 # this checkout
    .venv/bin/python bench/stack_memory.py --root ../main  # another checkout, same interpreter

Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tree(pid: int) -> list[int]:
    """The pid and every descendant of it."""
    found, frontier = [], [pid]
    while frontier:
        current = frontier.pop()
        found.append(current)
        children = Path(f"/proc/{current}/task/{current}/children")
        if children.exists():
            frontier.extend(int(child) for child in children.read_text().split())
    return found


def memory_kib(pid: int) -> dict[str, int]:
    figures = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value, *_ = line.split()
        figures[key.rstrip(":")] = int(value)
    return {"rss": figures["Rss"], "pss": figures["Pss"]}


def command_line(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()[:120]


def wait_ready(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} did not answer 200 within {seconds} s")


def measure(root: Path, settle_seconds: float) -> dict:
    with tempfile.TemporaryDirectory() as var_dir:
        port = free_port()
        env = {key: value for key, value in os.environ.items() if not key.startswith("GAIAORCH_")}
        env.update(GAIAORCH_VAR_DIR=var_dir, GAIAORCH_PORT=str(port), GAIAORCH_LOG_LEVEL="WARNING")
        python = sys.executable
        subprocess.run([python, "manage.py", "migrate", "-v0"], cwd=root, env=env, check=True)
        stack = subprocess.Popen(
            [python, "manage.py", "runstack"], cwd=root, env=env, stdout=subprocess.DEVNULL
        )
        try:
            wait_ready(f"http://127.0.0.1:{port}/health", 60)
            time.sleep(settle_seconds)  # let every worker fork and the first heartbeats pass
            processes = [
                {"pid": pid, "command": command_line(pid), **memory_kib(pid)} for pid in tree(stack.pid)
            ]
        finally:
            stack.send_signal(signal.SIGTERM)
            stack.wait(timeout=60)
    return {
        "root": str(root),
        "broker": "redis" if env.get("REDIS_URL") else "orm",
        "processes": len(processes),
        "rss_mib": round(sum(p["rss"] for p in processes) / 1024, 1),
        "pss_mib": round(sum(p["pss"] for p in processes) / 1024, 1),
        "tree": processes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="checkout whose manage.py runstack runs")
    parser.add_argument("--settle", type=float, default=15.0, help="seconds to wait after /health")
    args = parser.parse_args()
    print(json.dumps(measure(args.root.resolve(), args.settle), indent=2))


if __name__ == "__main__":
    main()
