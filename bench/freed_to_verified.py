"""Freed → verified: how long after a source's memory really goes the cleanup loop says so.

Runs the loop of the `waiting_cuda_cleanup` phase (handoffs.cleanup.wait_until_released, with
its real sampling, attribution and rules) against the fake telemetry file, in which a real
process standing for gaia-prime holds 11000 MiB. A timer thread frees that memory at a random
moment (uniform over two polls, so every phase of the poll is hit) and stamps when the file
changed; the loop's verified return is stamped too. The target: p95 ≤ one poll + the settle
window (a drop is seen at the next sample, then it must hold still for the window).

    .venv/bin/python bench/freed_to_verified.py                   # gpu.poll_ms 100, window 300 ms
    .venv/bin/python bench/freed_to_verified.py --poll-ms 50 --settle-window-ms 200

Prints one JSON document. Uses a throw-away var directory; touches nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PRIME_MIB = 11000


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def configure(var_dir: Path, label: str, args: argparse.Namespace) -> None:

    from bench import fake_stack
    from handoffs.tests.fakes import stack_config

    stack = stack_config("http://127.0.0.1:9", "http://127.0.0.1:9", "http://127.0.0.1:9")
    stack["gpu"] = {
        "poll_ms": args.poll_ms,
        "settle_window_ms": args.settle_window_ms,
        "settle_samples": args.settle_samples,
    }
    stack["services"]["gaia-prime"]["process"] = {"cmdline": re.escape(label)}
    fake_stack.use(var_dir, stack)


def one_round(gpu, prime, poll: float) -> float:
    from gaiaorch import config
    from handoffs import cleanup

    settings = config.current()
    kind = settings.handoffs.types["prime_to_study"]
    source = settings.gpu_chain(kind.source)
    rules = cleanup.rules_for(settings, kind, source)
    gpu.hold(prime.pid, PRIME_MIB)
    freed: list[float] = []

    def free() -> None:
        gpu.hold(prime.pid, 0)
        freed.append(time.monotonic())  # the file is replaced: the next sample sees it

    timer = threading.Timer(random.uniform(0, 2 * poll), free)
    timer.start()
    ladders = cleanup.Ladders([], [], take=lambda service, step: {})  # the steps were taken already
    cleanup.wait_until_released(
        ladders, rules, 0, deadline=time.monotonic() + 30, poll_seconds=poll, pause=time.sleep
    )
    verified = time.monotonic()
    timer.join()
    return verified - freed[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--poll-ms", type=int, default=100)
    parser.add_argument("--settle-window-ms", type=int, default=300)
    parser.add_argument("--settle-samples", type=int, default=3)
    args = parser.parse_args()
    var_dir = Path(tempfile.mkdtemp(prefix="gaiaorch-bench-"))
    from handoffs.tests.fakes import FakeGpu, GpuProcess

    prime = GpuProcess(f"bench-gaia-prime-{os.getpid()}")
    gpu = FakeGpu(var_dir / "fake-gpu.json")
    configure(var_dir, prime.label, args)

    import django

    django.setup()
    poll = args.poll_ms / 1000
    try:
        one_round(gpu, prime, poll)  # warm-up: imports, the first /proc reads
        latencies = [one_round(gpu, prime, poll) for _ in range(args.rounds)]
    finally:
        prime.stop()
    bound = poll + args.settle_window_ms / 1000
    ms = 1000
    p95 = percentile(latencies, 0.95)
    print(
        json.dumps(
            {
                "rounds": args.rounds,
                "poll_ms": args.poll_ms,
                "settle_window_ms": args.settle_window_ms,
                "settle_samples": args.settle_samples,
                "freed_to_verified_ms": {
                    "min": round(min(latencies) * ms, 1),
                    "p50": round(statistics.median(latencies) * ms, 1),
                    "p95": round(p95 * ms, 1),
                    "max": round(max(latencies) * ms, 1),
                },
                "target_ms": round(bound * ms, 1),
                "p95_within_target": p95 <= bound,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
