"""What open /gpu/wait requests cost a web process: its threads and its database connections, at 0
open waits and at N (500 by default), in one run.

One daphne process serves gaiaorch (console.asgi:application); one requester holds GPU 0 and N
others each open a `POST /gpu/wait` on a socket of their own and stay queued. Counted from
outside: the daphne process's threads (/proc/PID/status) and, on PostgreSQL, the connections to
its database (pg_stat_activity, this script's own left out). Then every client hangs up and the
counts are taken once more.

    .venv/bin/python bench/waits.py [--waits 500] [--postgres postgres://…/gaiaorch_waits_bench]

Without --postgres it runs on a throw-away SQLite file (threads only). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.leases_http import helper, requester, server_env, start_daphne


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise SystemExit(f"no thread count for process {pid}")


def connections_to(database_url: str | None) -> int | None:
    if not database_url:
        return None
    import psycopg

    with psycopg.connect(database_url) as conn:
        name = conn.info.dbname
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", [name]
        ).fetchone()
    return row[0]  # type: ignore[index]


def open_wait(base: str, token: str, name: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    body = json.dumps({"requester": name, "reason": "bench", "timeout_seconds": 600}).encode()
    sock = socket.create_connection((host, int(port)))
    head = (
        f"POST /gpu/wait HTTP/1.1\r\nHost: {host}\r\nAuthorization: Token {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


def queued(base: str) -> int:
    return len(httpx.get(f"{base}/gpu/status?gpu=0", timeout=30).json()["queue"])


def row(label: str, waits: int, pid: int, database_url: str | None) -> dict:
    return {
        "when": label,
        "open_waits": waits,
        "threads": threads_of(pid),
        "connections": connections_to(database_url),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--waits", type=int, default=500)
    parser.add_argument("--postgres", help="postgres://… database (emptied!)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = server_env(Path(tmp), args.postgres, args.waits + 1)
        tokens = helper(env, "prepare", str(args.waits + 1))
        server, base = start_daphne("console.asgi:application", env)
        rows, sockets = [], []
        try:
            holder = requester(0)
            held = httpx.post(
                f"{base}/gpu/acquire",
                json={"requester": holder, "reason": "bench"},
                headers={"Authorization": f"Token {tokens[holder]}"},
                timeout=30,
            )
            assert held.status_code == 200, held.text
            time.sleep(1)
            rows.append(row("idle, GPU held", 0, server.pid, args.postgres))
            began = time.monotonic()
            for number in range(1, args.waits + 1):
                sockets.append(open_wait(base, tokens[requester(number)], requester(number)))
            while queued(base) < args.waits:
                time.sleep(0.5)
            admitted = time.monotonic() - began
            time.sleep(2)  # several polls of the open waits
            rows.append(row(f"all queued ({admitted:.1f} s to admit)", args.waits, server.pid, args.postgres))
            time.sleep(5)
            rows.append(row("5 s later", args.waits, server.pid, args.postgres))
            for sock in sockets:
                sock.close()
            while queued(base) > 0:
                time.sleep(0.5)
            time.sleep(1)
            rows.append(row("every client hung up", 0, server.pid, args.postgres))
        finally:
            for sock in sockets:
                sock.close()
            server.terminate()
            server.wait(timeout=30)
    database = "PostgreSQL" if args.postgres else "SQLite"
    print(f"| {database}: when | open waits | daphne threads | database connections |")
    print("|---|---|---|---|")
    for each in rows:
        connections = "—" if each["connections"] is None else each["connections"]
        print(f"| {each['when']} | {each['open_waits']} | {each['threads']} | {connections} |")


if __name__ == "__main__":
    main()
