"""Orchestrator overhead of one verified GPU handoff, with instant fake GAIA services.

Runs N handoffs (alternating prime_to_study and study_to_prime) on the embedded default (SQLite
in WAL mode, django-q2's ORM broker). gaia-prime and gaia-study are real processes the fake
telemetry file lists by pid, recognised by their command lines, so every release is verified the
way it is on a GPU box: attribution, the residual allowance, the recipient's need, and free memory
settled over the settle window. Per handoff it reports, side by side from the same run, the
end-to-end time, the time the fake services spent answering, the settle window, and what is left:
what gaiaorch itself costs.

    .venv/bin/python bench/handoff_overhead.py                 # phases run inline, as the task does
    .venv/bin/python bench/handoff_overhead.py --worker        # through a real qcluster process

Prints one JSON document. Uses a throw-away var directory; touches nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
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
    fake_stack.use(var_dir, stack, GAIAORCH_WORKERS="1")


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


def one_handoff(kind: str, fakes: dict, worker: bool) -> tuple[float, float, str]:
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
    return elapsed, fake_time, rule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--worker", action="store_true", help="run phases in a real qcluster process")
    parser.add_argument("--poll-ms", type=int, default=100)
    parser.add_argument("--settle-window-ms", type=int, default=300)
    args = parser.parse_args()
    var_dir = Path(tempfile.mkdtemp(prefix="gaiaorch-bench-"))
    fakes, processes = start_fakes(var_dir)
    configure(var_dir, fakes, processes, args)

    import django

    django.setup()
    from django.core.management import call_command

    from leases import services as leases

    call_command("migrate", verbosity=0)
    leases.acquire(requester="gaia-core", reason="bench", actor="bench")
    worker = None
    if args.worker:
        worker = subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=os.environ.copy())
    window = args.settle_window_ms / 1000
    try:
        one_handoff("prime_to_study", fakes, args.worker)  # warm-up: imports, first connections
        one_handoff("study_to_prime", fakes, args.worker)
        overheads, totals, services_time, rules = [], [], [], Counter[str]()
        for number in range(args.count):
            kind = "prime_to_study" if number % 2 == 0 else "study_to_prime"
            elapsed, fake_time, rule = one_handoff(kind, fakes, args.worker)
            totals.append(elapsed)
            services_time.append(fake_time)
            overheads.append(elapsed - fake_time - window)
            rules[rule] += 1
    finally:
        if worker:
            worker.terminate()
            worker.wait(timeout=30)
        for fake in fakes.values():
            fake.stop()
        for process in processes.values():
            process.stop()
    ms = 1000
    print(
        json.dumps(
            {
                "handoffs": args.count,
                "mode": "qcluster worker (ORM broker)" if args.worker else "inline runner",
                "database": "sqlite (embedded default)",
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
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
