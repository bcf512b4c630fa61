"""Memory of the whole `manage.py runstack` process tree, idle or under lease load, as RSS and PSS.

Starts runstack on a throw-away var directory (SQLite, no Redis), waits until /health answers and
the tree has settled, then reads /proc/<pid>/smaps_rollup of every process in the tree. PSS
(proportional set size) counts a page shared by N processes as 1/N in each, so the sum is what
the stack really costs the machine; RSS counts shared pages in every process that maps them.
With --load N, N clients run acquire -> release cycles on GPU 0 over HTTP (bench/leases_http.py)
and the tree is read near the end of the load.

    .venv/bin/python bench/stack_memory.py                 # this checkout, idle
    .venv/bin/python bench/stack_memory.py --load 16       # ... under 16 clients
    .venv/bin/python bench/stack_memory.py --root ../main  # another checkout, same interpreter

Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.leases_http import drive, server_env  # noqa: E402

KEPT = ("GAIAORCH_CONFIG", "GAIAORCH_VAR_DIR", "GAIAORCH_LOG_LEVEL")


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
    """The process name (the supervisor names its children) and its command line."""
    name = Path(f"/proc/{pid}/comm").read_text().strip()
    return (
        f"[{name}] " + Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()[:100]
    )


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


def read_tree(pid: int) -> list[dict]:
    return [{"pid": p, "command": command_line(p), **memory_kib(p)} for p in tree(pid)]


def prepare_clients(root: Path, env: dict[str, str], clients: int) -> dict[str, str]:
    command = [sys.executable, "-m", "bench.leases_setup", "prepare", str(clients)]
    env = {**env, "DJANGO_SETTINGS_MODULE": "gaiaorch.settings"}
    out = subprocess.run(command, cwd=root, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(root: Path, settle_seconds: float, clients: int, load_seconds: float) -> dict:
    with tempfile.TemporaryDirectory() as var_dir:
        port = free_port()
        # The configuration of bench/leases_http.py: no GPU backend, one service per client.
        env = server_env(Path(var_dir), None, max(clients, 1))
        env = {k: v for k, v in env.items() if not k.startswith("GAIAORCH_") or k in KEPT}
        env["GAIAORCH_PORT"] = str(port)
        tokens = prepare_clients(root, env, clients) if clients else {}
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=root, env=env, check=True)
        stack = subprocess.Popen(
            [sys.executable, "manage.py", "runstack"], cwd=root, env=env, stdout=subprocess.DEVNULL
        )
        cycles = None
        try:
            wait_ready(f"http://127.0.0.1:{port}/health", 60)
            time.sleep(settle_seconds)  # let every worker fork and the first heartbeats pass
            if clients:
                result: dict = {}
                load = threading.Thread(
                    target=lambda: result.update(
                        outcome=drive(f"http://127.0.0.1:{port}", tokens, clients, load_seconds)[0]
                    )
                )
                load.start()
                time.sleep(load_seconds * 0.8)
                processes = read_tree(stack.pid)
                load.join()
                cycles = {"cycles": len(result["outcome"].latencies), "errors": len(result["outcome"].errors)}
            else:
                processes = read_tree(stack.pid)
        finally:
            stack.send_signal(signal.SIGTERM)
            stack.wait(timeout=60)
    return {
        "root": str(root),
        "clients": clients,
        "load": cycles,
        "processes": len(processes),
        "rss_mib": round(sum(p["rss"] for p in processes) / 1024, 1),
        "pss_mib": round(sum(p["pss"] for p in processes) / 1024, 1),
        "tree": processes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="checkout whose manage.py runstack runs")
    parser.add_argument("--settle", type=float, default=15.0, help="seconds to wait after /health")
    parser.add_argument("--load", type=int, default=0, help="clients cycling leases while measuring")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long the load runs")
    args = parser.parse_args()
    print(json.dumps(measure(args.root.resolve(), args.settle, args.load, args.seconds), indent=2))


if __name__ == "__main__":
    main()
