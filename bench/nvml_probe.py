"""Verify the nvml telemetry backend and the cleanup phase's rules on a real GPU.

A child process (torch) allocates several GiB, then frees them while this process samples VRAM
through gaiaorch.telemetry's Nvml backend and attributes it (gaiaorch.attribution, the child
recognised by its command line). Every reading is judged by the rules the waiting_cuda_cleanup
phase applies (handoffs.measure.judge: the child's memory within the residual allowance, free ≥
need, free memory settled over the window). The probe reports how long after the memory really
dropped the rules verified the release, which should be within one poll plus the settle window.
It does this once with `empty_cache()` (a live CUDA context keeps some memory, which is what the
residual allowance is for) and once by exiting.

    python bench/nvml_probe.py [--gib 8] [--poll-ms 100] [--settle-window-ms 300] [--gpu 0]

Needs torch and pynvml, plus Django and PyYAML on the path (not the whole project's
requirements: it loads settings only, never the apps). Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["DJANGO_SETTINGS_MODULE"] = "gaiaorch.settings"
os.environ["GAIAORCH_GPU_BACKEND"] = "nvml"
os.environ.setdefault("GAIAORCH_VAR_DIR", tempfile.mkdtemp(prefix="gaiaorch-probe-"))

CHILD = r"""
import sys, time, torch
gib, gpu, how = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]  # argv[4]: the probe's token
torch.cuda.init()
block = torch.ones(int(gib * 1024**3), dtype=torch.uint8, device=f"cuda:{gpu}")
torch.cuda.synchronize()
print("allocated", time.time(), flush=True)
sys.stdin.readline()
if how == "exit":
    print("freed", time.time(), flush=True)
    sys.exit(0)
del block
torch.cuda.empty_cache()
torch.cuda.synchronize()
print("freed", time.time(), flush=True)
sys.stdin.readline()
"""


TOKEN = f"gaiaorch-probe-{os.getpid()}"  # in the child's command line: how attribution finds it


def read(gpu: int):
    from gaiaorch import attribution, telemetry
    from handoffs.measure import Reading

    sample = telemetry.sample()
    owners = attribution.attribute(sample, [attribution.ServiceMatch("probe", cmdline=TOKEN)]).gpu(gpu)
    return Reading(time.monotonic(), sample.gpu(gpu), owners)  # type: ignore[arg-type]


class DropWatcher(threading.Thread):
    """Samples NVML as fast as it answers, to timestamp the moment the child's memory truly went."""

    def __init__(self, gpu: int, residual_mib: int):
        super().__init__(daemon=True)
        self.gpu, self.residual_mib = gpu, residual_mib
        self.dropped_at: float | None = None
        self.samples = 0

    def run(self) -> None:
        deadline = time.monotonic() + 30
        while self.dropped_at is None and time.monotonic() < deadline:
            reading = read(self.gpu)
            self.samples += 1
            if reading.attribution.service_mib("probe") <= self.residual_mib:
                self.dropped_at = reading.at


def one_round(how: str, gib: float, gpu: int, args: argparse.Namespace) -> dict:
    """Allocate in a child, make it free (empty_cache or exit), judge readings until verified."""
    from handoffs.measure import Rules, judge

    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(gib), str(gpu), how, TOKEN],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().startswith("allocated")  # type: ignore[union-attr]
    allocated = read(gpu)
    rules = Rules(
        handoff_type="probe",
        source=("probe",),
        recipient="a recipient",
        residual_mib={"probe": args.residual_mib},
        need_mib=int(gib * 1024) // 2,
        headroom_mib=0,
        settle_window_ms=args.settle_window_ms,
        settle_delta_mib=64,
        settle_samples=3,
    )
    watcher = DropWatcher(gpu, args.residual_mib)
    watcher.start()
    child.stdin.write("free\n")  # type: ignore[union-attr]
    child.stdin.flush()  # type: ignore[union-attr]
    poll, readings, verdict = args.poll_ms / 1000, [], None
    deadline = next_sample = time.monotonic()
    deadline += 30
    while time.monotonic() < deadline:
        readings.append(read(gpu))
        verdict = judge(readings, rules)
        if verdict.verified:
            break
        next_sample = max(next_sample + poll, time.monotonic())
        time.sleep(max(0.0, next_sample - time.monotonic()))
    verified_at = readings[-1].at
    watcher.join(timeout=5)
    if how != "exit":
        child.stdin.write("exit\n")  # type: ignore[union-attr]
        child.stdin.flush()  # type: ignore[union-attr]
    child.wait(timeout=60)
    dropped = watcher.dropped_at
    return {
        "release": how,
        "attributed_to_the_child_mib": allocated.attribution.service_mib("probe"),
        "attribution_available": allocated.attributed,
        "verified": bool(verdict and verdict.verified),
        "rule": verdict.rule if verdict else "",
        "verdict": verdict.sentence if verdict else "",
        "child_mib_after": readings[-1].attribution.service_mib("probe"),
        "memory_dropped_to_verified_seconds": None if dropped is None else round(verified_at - dropped, 3),
        "within_one_poll_and_the_window": dropped is not None
        and verified_at - dropped <= poll + args.settle_window_ms / 1000,
        "samples": len(readings),
        "watcher_samples": watcher.samples,
        "settle": verdict.figures.get("settle") if verdict else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=8.0)
    parser.add_argument("--poll-ms", type=int, default=100)
    parser.add_argument("--gpu", type=int, default=0)
    parser.add_argument("--residual-mib", type=int, default=1024)
    parser.add_argument("--settle-window-ms", type=int, default=300)
    args = parser.parse_args()

    from gaiaorch import telemetry

    first = telemetry.sample()
    if not first.available:
        raise SystemExit(f"nvml backend unavailable: {first.reason}")
    idle: Any = first.gpu(args.gpu)
    rounds = [one_round(how, args.gib, args.gpu, args) for how in ("empty_cache", "exit")]
    time.sleep(0.5)
    sample: Any = telemetry.sample().gpu(args.gpu)
    print(
        json.dumps(
            {
                "gpu": {
                    "name": sample.name,
                    "total_mib": sample.total_mib,
                    "reserved_mib": sample.reserved_mib,
                },
                "allocated_gib": args.gib,
                "poll_seconds": args.poll_ms / 1000,
                "settle_window_ms": args.settle_window_ms,
                "residual_mib": args.residual_mib,
                "used_mib_idle": idle.used_mib,
                "used_mib_at_end": sample.used_mib,
                "rounds": rounds,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
