"""Acquire -> release cycles over HTTP against daphne, for gaiaorch (embedded SQLite and
PostgreSQL) and for a bare ASGI floor app answering the same requests.

A cycle: POST /gpu/acquire; if queued (202), POST /gpu/wait {lease_id} until granted; then
POST /gpu/release. All clients contend for GPU 0. Afterwards it checks that nothing was lost:
every cycle got a distinct fencing token, every release answered 200, and no lease is left
waiting or active.

    .venv/bin/python bench/leases_http.py [--seconds 5] [--clients 1 16] [--postgres URL]

Prints a Markdown table (ops/s = cycles per second; p50/p99 of a whole cycle in ms). The
one-GPU rows of gaiaorch with several clients run bench/handover_probe.py (gaiaorch with two
probes) and time each handover from the previous holder's release commit: to the server starting
to send the next grant, and to that grant's answer reaching its client (see `handovers`). A third
reference row times two GET /health requests of gaiaorch per cycle: the framework's own cost
(Django + DRF under daphne) without any lease work. The last rows time one GET /gpu/status per
cycle, 1 client, on a box of 16 GPUs each with a holder and 2 waiters (`--status-gpus`); with
`--only status` the floor's rows come first: its 1-client cycle (two requests) and one GET alone.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from math import nan
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python")


@dataclass
class Outcome:
    latencies: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # fencing token -> (CLOCK_MONOTONIC when its grant answer arrived, its release was sent,
    # its release was answered; its lease id)
    moments: dict[int, tuple[float, float, float, str]] = field(default_factory=dict)


def now() -> float:
    """The clock of the handover moments: the server's probes read the same one."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def requester(number: int) -> str:
    return f"bench-{number:02d}"


def server_env(workdir: Path, database_url: str | None, clients: int, gpus: int = 1) -> dict[str, str]:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "orchestrator.yaml"
    # Plain processes: requesters, no containers.
    services: dict[str, dict] = {requester(n): {} for n in range(clients)}
    config.write_text(json.dumps({"gpu": {"backend": "none", "count": gpus}, "services": services}))
    env = {**os.environ, "GAIAORCH_CONFIG": str(config), "GAIAORCH_VAR_DIR": str(workdir)}
    env["GAIAORCH_LOG_LEVEL"] = "WARNING"
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    if database_url:
        env["DATABASE_URL"] = database_url
    return env


def helper(env: dict[str, str], *args: str) -> dict:
    """Run bench/leases_setup.py with the server's settings."""
    env = {**env, "DJANGO_SETTINGS_MODULE": "gaiaorch.settings"}
    command = [PYTHON, "-m", "bench.leases_setup", *args]
    out = subprocess.run(command, env=env, cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def start_daphne(app: str, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """daphne serving `app` on a free port, once it answers /health."""
    port = free_port()
    server = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "daphne"), "-b", "127.0.0.1", "-p", str(port), "-v", "0", app],
        env={**env, "DJANGO_SETTINGS_MODULE": "gaiaorch.settings"},
        cwd=ROOT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{base}/health", timeout=1)
            return server, base
        except httpx.TransportError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit(f"daphne did not start for {app}")


def cycle(client: httpx.Client, name: str, outcome: Outcome, gpu: int = 0) -> None:
    started = time.perf_counter()
    response = client.post("/gpu/acquire", json={"requester": name, "reason": "bench", "gpu": gpu})
    body = response.json()
    while response.status_code == 202:
        response = client.post("/gpu/wait", json={"lease_id": body["lease_id"], "timeout_seconds": 30})
        body = response.json()
    if response.status_code != 200:
        outcome.errors.append(f"acquire/wait {response.status_code}: {body}")
        return
    granted = releasing = now()
    released = client.post("/gpu/release", json={"lease_id": body["lease_id"]})
    if released.status_code != 200:
        outcome.errors.append(f"release {released.status_code}: {released.text[:200]}")
        return
    answered = now()
    outcome.latencies.append(time.perf_counter() - started)
    token = body["fencing_token"]
    outcome.tokens.append(token + gpu * 10**12)  # fencing tokens are per GPU
    outcome.moments[token + gpu * 10**12] = (granted, releasing, answered, body["lease_id"])


def spread_cycle(client: httpx.Client, name: str, outcome: Outcome) -> None:
    """A cycle on the client's own GPU (bench-NN uses GPU NN): different GPUs, no queue."""
    cycle(client, name, outcome, gpu=int(name.rsplit("-", 1)[1]))


def handovers(outcome: Outcome) -> tuple[list[float], list[float]]:
    """One GPU, a queue: for each grant, seconds from the previous holder's release (fencing
    tokens give the order) to this grant's answer reaching its client. The release commits after
    its request was sent and before its answer is, so (grant - release sent) bounds the time from
    that commit to the grant from above, and (grant - release answered) from below."""
    upper, lower = [], []
    for token, (granted, _, _, _) in outcome.moments.items():
        previous = outcome.moments.get(token - 1)
        if previous is not None:
            upper.append(granted - previous[1])
            lower.append(granted - previous[2])
    return upper, lower


def handovers_from_commit(outcome: Outcome, probed: Path) -> dict[str, list[float]]:
    """The same handovers timed from the release's commit, as the server's probes saw it
    (bench/handover_probe.py): the commit is the one whose wake-up names both the released lease
    and the next grant's (the decision that ended one and granted the other). Seconds from it to
    the server starting to send the grant's answer ("sent"), to that answer reaching its client
    ("received"), and between those two: what the benchmark itself adds on this machine (the
    kernel's loopback, the client thread getting a core and parsing the answer)."""
    records = [json.loads(line) for line in probed.read_text().splitlines()]
    commits: dict[tuple[str, str], float] = {}
    for record in records:
        if record[0] == "commit":
            for one in record[2]:
                for other in record[2]:
                    commits.setdefault((one, other), record[1])
    sent = {record[3]: record[1] for record in records if record[0] == "answer" and record[2] == 200}
    times: dict[str, list[float]] = {"sent": [], "received": [], "sent_to_received": []}
    for token, (granted, _, _, lease_id) in outcome.moments.items():
        previous = outcome.moments.get(token - 1)
        committed = commits.get((previous[3], lease_id)) if previous else None
        if committed is None or lease_id not in sent:
            continue  # the first grant of the window, or one its acquire answered (no wait)
        times["sent"].append(sent[lease_id] - committed)
        times["received"].append(granted - committed)
        times["sent_to_received"].append(granted - sent[lease_id])
    return times


def health_cycle(client: httpx.Client, name: str, outcome: Outcome) -> None:
    """Two framework round trips without a database write: what Django itself costs."""
    started = time.perf_counter()
    for _ in range(2):
        response = client.get("/health")
        if response.status_code != 200:
            outcome.errors.append(f"health {response.status_code}")
            return
    outcome.latencies.append(time.perf_counter() - started)
    outcome.tokens.append(len(outcome.tokens) + 1)


def timed_read(client: httpx.Client, path: str, outcome: Outcome) -> None:
    """One GET of a read-only path, timed; anything but 200 is an error."""
    started = time.perf_counter()
    response = client.get(path)
    if response.status_code != 200:
        outcome.errors.append(f"{path} {response.status_code}")
        return
    outcome.latencies.append(time.perf_counter() - started)
    outcome.tokens.append(len(outcome.tokens) + 1)


def status_cycle(client: httpx.Client, name: str, outcome: Outcome) -> None:
    """One GET /gpu/status: the GPUs, their holders and queues."""
    timed_read(client, "/gpu/status", outcome)


def system_status_cycle(client: httpx.Client, name: str, outcome: Outcome) -> None:
    """One GET /status: the operator's overview."""
    timed_read(client, "/status", outcome)


CYCLES = {"health": health_cycle, "GET /gpu/status": status_cycle, "GET /status": system_status_cycle}
CYCLES["own GPU"] = spread_cycle


def drive(
    base: str, tokens: dict[str, str], clients: int, seconds: float, one=cycle
) -> tuple[Outcome, float]:
    outcome = Outcome()
    stop = [0.0]
    # the timed window starts once every client has warmed up (set before any is let go)
    warmed = threading.Barrier(clients + 1, action=lambda: stop.__setitem__(0, time.monotonic() + seconds))

    def run(number: int) -> None:
        name = requester(number)
        headers = {"Authorization": f"Token {tokens.get(name, 'floor')}"}
        with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
            try:
                one(client, name, Outcome())  # warm-up: connection and first-request costs
            finally:
                warmed.wait()
            while time.monotonic() < stop[0]:
                one(client, name, outcome)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    warmed.wait()
    began = time.monotonic()
    for thread in threads:
        thread.join()
    return outcome, time.monotonic() - began


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def measure(label: str, app: str, env: dict[str, str], tokens: dict[str, str], clients: int, seconds: float):
    one = next((kind for word, kind in CYCLES.items() if word in label), cycle)
    queued = clients > 1 and one is cycle and app == "console.asgi:application"
    probed = Path(env["GAIAORCH_VAR_DIR"]) / "handover-probe.jsonl"
    if queued:  # the one-GPU queue: the same application with the handover probes
        app, env = "bench.handover_probe:application", {**env, "HANDOVER_PROBE_OUT": str(probed)}
    server, base = start_daphne(app, env)
    try:
        outcome, elapsed = drive(base, tokens, clients, seconds, one)
    finally:
        server.terminate()
        server.wait(timeout=10)
    cycles = len(outcome.latencies)
    lost = cycles - len(set(outcome.tokens))
    row = {
        "server": label,
        "clients": clients,
        "cycles": cycles,
        "ops_s": cycles / elapsed,
        "p50_ms": 1000 * statistics.median(outcome.latencies) if cycles else float("nan"),
        "p99_ms": 1000 * percentile(outcome.latencies, 0.99),
        "errors": len(outcome.errors),
        "duplicate_tokens": lost,
    }
    upper, lower = handovers(outcome)
    if queued and upper:
        row["handover_p50_ms"] = 1000 * statistics.median(upper)
        row["handover_p99_ms"] = 1000 * percentile(upper, 0.99)
        row["handover_lower_p50_ms"] = 1000 * statistics.median(lower)
        for name, values in handovers_from_commit(outcome, probed).items():
            row[f"handover_commit_{name}_p50_ms"] = 1000 * statistics.median(values) if values else nan
            row[f"handover_commit_{name}_p99_ms"] = 1000 * percentile(values, 0.99)
        row["handovers_timed"] = len(upper)
    if app != "bench.floor_app:application" and one in (cycle, spread_cycle):
        left = helper(env, "leftovers")
        row["left_live"] = left["live"]
        row["released_rows"] = left["released"]
    for error in outcome.errors[:3]:
        print(f"  {label}: {error}", file=sys.stderr)
    return row


def still_queued(row: dict, env: dict[str, str]) -> dict:
    """A status row's live leases after it ran (its "left live" cell): every holder and waiter of
    the queue it read should still be there, or the row timed a shorter queue than it says."""
    row["left_live"] = helper(env, "leftovers")["live"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--postgres", help="postgres://… database for the PostgreSQL runs (emptied!)")
    parser.add_argument("--status-gpus", type=int, default=16, help="GPUs of the status rows (0: none)")
    parser.add_argument(
        "--spread", type=int, default=16, help="N clients each on its own GPU of N (0: no such rows)"
    )
    parser.add_argument(
        "--history",
        type=int,
        nargs=2,
        metavar=("LEASES", "EVENTS"),
        default=None,
        help="also time the status reads after adding this many ended leases and events",
    )
    parser.add_argument("--only", choices=["cycles", "status"], help="run only these rows")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for clients in args.clients if args.only != "status" else []:
            sqlite_env = server_env(Path(tmp) / f"sqlite-{clients}", None, clients)
            targets: list[tuple[str, str, dict[str, str], dict | None]] = [
                ("floor (bare ASGI)", "bench.floor_app:application", sqlite_env, {})
            ]
            targets.append(
                ("Django GET /health x2 (no lease work)", "console.asgi:application", sqlite_env, {})
            )
            targets.append(("gaiaorch SQLite", "console.asgi:application", sqlite_env, None))
            if args.postgres:
                pg_env = server_env(Path(tmp) / f"pg-{clients}", args.postgres, clients)
                targets.append(("gaiaorch PostgreSQL", "console.asgi:application", pg_env, None))
            for label, app, env, tokens in targets:
                tokens = helper(env, "prepare", str(clients)) if tokens is None else tokens
                rows.append(measure(label, app, env, tokens, clients, args.seconds))
                print(json.dumps(rows[-1]), file=sys.stderr)
        if args.spread and args.only != "status":
            spread = args.spread
            databases = [("SQLite", None)] + ([("PostgreSQL", args.postgres)] if args.postgres else [])
            for name, url in databases:
                env = server_env(Path(tmp) / f"spread-{name}", url, spread, gpus=spread)
                tokens = helper(env, "prepare", str(spread))
                label = f"gaiaorch {name}, {spread} clients each on its own GPU"
                rows.append(measure(label, "console.asgi:application", env, tokens, spread, args.seconds))
                print(json.dumps(rows[-1]), file=sys.stderr)
        if args.status_gpus and args.only != "cycles":
            if args.only == "status":  # the floor of this run: its cycle (two requests) and one read
                floor_env = server_env(Path(tmp) / "floor", None, 1)
                for label in ("floor (bare ASGI)", "floor (bare ASGI) GET /gpu/status, one request"):
                    rows.append(measure(label, "bench.floor_app:application", floor_env, {}, 1, args.seconds))
                    print(json.dumps(rows[-1]), file=sys.stderr)
            databases = [("SQLite", None)] + ([("PostgreSQL", args.postgres)] if args.postgres else [])
            for name, url in databases:
                env = server_env(Path(tmp) / f"status-{name}", url, 3, gpus=args.status_gpus)
                tokens = helper(env, "prepare", "3")
                helper(env, "queue", "2")
                for path in ("GET /gpu/status", "GET /status"):
                    label = f"gaiaorch {name} {path}, {args.status_gpus} GPUs"
                    rows.append(
                        still_queued(
                            measure(label, "console.asgi:application", env, tokens, 1, args.seconds), env
                        )
                    )
                    print(json.dumps(rows[-1]), file=sys.stderr)
                if args.history:
                    helper(env, "history", *map(str, args.history))
                    for path in ("GET /gpu/status", "GET /status"):
                        label = (
                            f"gaiaorch {name} {path}, {args.status_gpus} GPUs, "
                            f"{args.history[0]} ended leases + {args.history[1]} events"
                        )
                        row = measure(label, "console.asgi:application", env, tokens, 1, args.seconds)
                        rows.append(still_queued(row, env))
                        print(json.dumps(rows[-1]), file=sys.stderr)
    print(
        "| server | clients | cycles | ops/s | p50 ms | p99 ms | errors | duplicate tokens | left live "
        "| handover p50/p99 ms (from release sent; from release answered) "
        "| handover from the release's commit p50/p99 ms: grant sent; received (sent → received) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        cells = [row["server"], row["clients"], row["cycles"], f"{row['ops_s']:.0f}", f"{row['p50_ms']:.2f}"]
        cells += [f"{row['p99_ms']:.2f}", row["errors"], row["duplicate_tokens"], row.get("left_live", "—")]
        handover = row.get("handover_p50_ms")
        cells.append(
            f"{handover:.2f} / {row['handover_p99_ms']:.2f} ({row['handover_lower_p50_ms']:.2f})"
            if handover is not None
            else "—"
        )
        cells.append(
            f"{row['handover_commit_sent_p50_ms']:.2f} / {row['handover_commit_sent_p99_ms']:.2f}; "
            f"{row['handover_commit_received_p50_ms']:.2f} / {row['handover_commit_received_p99_ms']:.2f} "
            f"({row['handover_commit_sent_to_received_p50_ms']:.2f})"
            if handover is not None
            else "—"
        )
        print("| " + " | ".join(str(cell) for cell in cells) + " |")


if __name__ == "__main__":
    main()
