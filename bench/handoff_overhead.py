"""Orchestrator overhead of one verified GPU handoff, with instant fake GAIA services.

Runs N handoffs (alternating prime_to_study and study_to_prime) on the embedded default (SQLite
in WAL mode, django-q2's ORM broker). gaia-prime and gaia-study are real processes the fake
telemetry file lists by pid, recognised by their command lines, so every release is verified the
way it is on a GPU box: attribution, the residual allowance, the recipient's need, and free memory
settled over the settle window. Per handoff it reports, side by side from the same run, the
end-to-end time, the time the fake services spent answering, the settle window, and what is left:
what gaiaorch itself costs.

With --worker it also reports the pickup: from the moment a handoff's start is committed (its
task is about to be queued) to the moment the worker begins its first phase, with a random pause
before each start so that no start falls in step with the broker's poll; and the CPU the idle
worker (its whole process tree) spends per second before the first handoff.

    .venv/bin/python bench/handoff_overhead.py                 # phases run inline, as the task does
    .venv/bin/python bench/handoff_overhead.py --worker        # through a real qcluster process
    .venv/bin/python bench/handoff_overhead.py --worker \
        --database-url postgres://postgres@127.0.0.1:5432/<db> --redis-url redis://127.0.0.1:6379/<n>

Prints one JSON document. Uses a throw-away var directory; on a --database-url it empties every
table of that database first (give it one of its own) and on a --redis-url it empties the task
queue; touches nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PRIME_MIB, STUDY_MIB = 11000, 16384


def configure(var_dir: Path, fakes: dict, processes: dict, args: argparse.Namespace) -> None:

    from bench import fake_stack
    from handoffs.tests.fakes import stack_config

    stack = stack_config(fakes["gaia-core"].url, fakes["gaia-prime"].url, fakes["gaia-study"].url)
    # The model's defaults for sampling and settling, as a site runs them (the tests shorten them).
    stack["gpu"] = {"poll_ms": args.poll_ms, "settle_window_ms": args.settle_window_ms, "settle_samples": 3}
    for name, process in processes.items():
        stack["services"][name]["process"] = {"cmdline": re.escape(process.label)}
    urls = {"DATABASE_URL": args.database_url, "REDIS_URL": args.redis_url}
    fake_stack.use(var_dir, stack, GAIAORCH_WORKERS="1", **{k: v for k, v in urls.items() if v})


def start_fakes(var_dir: Path):
    from handoffs.tests.fakes import CONTRACT, FakeGpu, FakeService, GpuProcess

    gpu = FakeGpu(var_dir / "fake-gpu.json")
    processes = {name: GpuProcess(f"bench-{name}-{os.getpid()}") for name in ("gaia-prime", "gaia-study")}
    prime, study = processes["gaia-prime"].pid, processes["gaia-study"].pid
    fakes = {name: FakeService(name, routes).start() for name, routes in CONTRACT.items()}
    fakes["gaia-prime"].on("/sleep", gpu.holder(prime, 0))
    fakes["gaia-prime"].on("/wake_up", gpu.holder(prime, PRIME_MIB))
    fakes["gaia-study"].on("/study/gpu-ready", gpu.holder(study, STUDY_MIB))
    fakes["gaia-study"].on("/study/gpu-release", gpu.holder(study, 0))
    gpu.hold(prime, PRIME_MIB)
    return fakes, processes


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


ACCEPTED: dict[str, float] = {}  # handoff id -> when its start was committed (time.time())


def stamp_acceptance() -> None:
    """Note when each start commits: the task is queued right after, by services.enqueue."""
    from handoffs import services

    queue = services.enqueue

    def stamped(handoff_id):
        ACCEPTED[str(handoff_id)] = time.time()
        queue(handoff_id)

    services.enqueue = stamped


def pickup_seconds(handoff) -> float:
    """Accepted -> the worker's first phase row (written as soon as it holds the claim)."""
    from handoffs.models import Phase

    first = handoff.phases.exclude(name=Phase.INITIATED).order_by("started_at", "id").first()
    return first.started_at.timestamp() - ACCEPTED[str(handoff.id)]


def one_handoff(kind: str, fakes: dict, worker: bool) -> tuple[float, float, str, float | None]:
    from handoffs import services
    from handoffs.models import TERMINAL, Handoff, Phase

    fake_before = sum(fake.busy_seconds for fake in fakes.values())
    started = time.perf_counter()
    handoff = services.start(type=kind, actor="bench")
    if not worker:
        services.run(handoff.id)
    while not Handoff.objects.filter(pk=handoff.pk, phase__in=TERMINAL).exists():
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    ended = Handoff.objects.get(pk=handoff.pk)
    if ended.phase != "completed":
        raise SystemExit(f"handoff {handoff.id} ended as {ended.phase}: {ended.error}")
    fake_time = sum(fake.busy_seconds for fake in fakes.values()) - fake_before
    rule = ended.phases.get(name=Phase.WAITING_CUDA_CLEANUP).figures["rule"]
    return elapsed, fake_time, rule, pickup_seconds(ended) if worker else None


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and every descendant still running."""
    from bench.stack_memory import tree

    ticks = 0
    for process in tree(pid):
        fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def idle_cpu_percent(pid: int, seconds: float) -> float:
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return round((cpu_seconds(pid) - before) / seconds * 100, 2)


def empty_own_stores(args: argparse.Namespace) -> None:
    """The benchmark's own database and queue start empty: no handoff or lease of an earlier run."""
    from django.core.management import call_command
    from django_q.brokers import get_broker

    if args.database_url:
        call_command("flush", interactive=False, verbosity=0)
    if args.redis_url:
        get_broker().purge_queue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--worker", action="store_true", help="run phases in a real qcluster process")
    parser.add_argument("--poll-ms", type=int, default=100)
    parser.add_argument("--settle-window-ms", type=int, default=300)
    parser.add_argument("--database-url", help="a PostgreSQL database of the benchmark's own (emptied)")
    parser.add_argument("--redis-url", help="Redis as broker and channel layer (its task queue is emptied)")
    parser.add_argument("--gap-ms", type=int, default=300, help="--worker: a random pause before each start")
    parser.add_argument("--idle-seconds", type=float, default=5.0, help="--worker: idle CPU measured so long")
    args = parser.parse_args()
    var_dir = Path(tempfile.mkdtemp(prefix="gaiaorch-bench-"))
    fakes, processes = start_fakes(var_dir)
    configure(var_dir, fakes, processes, args)

    import django

    django.setup()
    from django.core.management import call_command

    from leases import services as leases

    call_command("migrate", verbosity=0)
    empty_own_stores(args)
    leases.acquire(requester="gaia-core", reason="bench", actor="bench")
    stamp_acceptance()
    worker, idle_cpu = None, None
    if args.worker:
        worker = subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=os.environ.copy())
    window = args.settle_window_ms / 1000
    try:
        one_handoff("prime_to_study", fakes, args.worker)  # warm-up: imports, first connections
        one_handoff("study_to_prime", fakes, args.worker)
        if worker:
            idle_cpu = idle_cpu_percent(worker.pid, args.idle_seconds)
        overheads, totals, services_time, pickups, rules = [], [], [], [], Counter[str]()
        for number in range(args.count):
            kind = "prime_to_study" if number % 2 == 0 else "study_to_prime"
            if worker:
                time.sleep(random.uniform(0, args.gap_ms / 1000))
            elapsed, fake_time, rule, pickup = one_handoff(kind, fakes, args.worker)
            totals.append(elapsed)
            services_time.append(fake_time)
            overheads.append(elapsed - fake_time - window)
            rules[rule] += 1
            if pickup is not None:
                pickups.append(pickup)
    finally:
        if worker:
            worker.terminate()
            worker.wait(timeout=30)
        for fake in fakes.values():
            fake.stop()
        for process in processes.values():
            process.stop()
    ms = 1000
    broker = "Redis broker" if args.redis_url else "ORM broker"
    worker_figures = {
        "pickup_ms": {
            "p50": round(statistics.median(pickups) * ms, 1),
            "p95": round(percentile(pickups, 0.95) * ms, 1),
            "max": round(max(pickups) * ms, 1),
        },
        "idle_worker_cpu_percent": idle_cpu,
    }
    print(
        json.dumps(
            {
                "handoffs": args.count,
                "mode": f"qcluster worker ({broker})" if args.worker else "inline runner",
                "database": "postgresql" if args.database_url else "sqlite (embedded default)",
                "poll_ms": args.poll_ms,
                "settle_window_ms": args.settle_window_ms,
                "verified_by": dict(rules),
                "overhead_ms": {
                    "p50": round(statistics.median(overheads) * ms, 1),
                    "p99": round(percentile(overheads, 0.99) * ms, 1),
                    "max": round(max(overheads) * ms, 1),
                },
                "services_ms": {"p50": round(statistics.median(services_time) * ms, 1)},
                "end_to_end_ms": {"p50": round(statistics.median(totals) * ms, 1)},
                **(worker_figures if args.worker else {}),
                "load_average_1m": round(os.getloadavg()[0], 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
