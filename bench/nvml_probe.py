"""Verify the nvml telemetry backend and the cleanup phase's measuring loop on a real GPU.

A child process (torch) allocates several GiB, then frees them while this process samples VRAM
through gaiaorch.telemetry's Nvml backend. The cleanup loop of the handoff service
(handoffs.measure.wait_for_cleanup, the code the waiting_cuda_cleanup phase runs) is started
before the free; the probe reports how long after the child's free it saw the memory gone, which
should be within one poll interval. Then the child exits, and the probe measures again (a live
CUDA context keeps some memory, which is what the residual allowance is for).

    python bench/nvml_probe.py [--gib 8] [--poll-ms 100] [--gpu 0]

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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["DJANGO_SETTINGS_MODULE"] = "gaiaorch.settings"
os.environ["GAIAORCH_GPU_BACKEND"] = "nvml"
os.environ.setdefault("GAIAORCH_VAR_DIR", tempfile.mkdtemp(prefix="gaiaorch-probe-"))

CHILD = r"""
import sys, time, torch
gib, gpu, how = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
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


def used(gpu: int) -> int:
    from handoffs.measure import measure

    return measure(gpu).used_mib


class DropWatcher(threading.Thread):
    """Samples NVML as fast as it answers, to timestamp the moment the threshold was truly met."""

    def __init__(self, gpu: int, threshold):
        super().__init__(daemon=True)
        self.gpu, self.threshold = gpu, threshold
        self.met_at: float | None = None
        self.samples = 0
        self.stop = threading.Event()

    def run(self) -> None:
        from handoffs.measure import measure

        while not self.stop.is_set() and self.met_at is None:
            sample = measure(self.gpu)
            self.samples += 1
            if self.threshold.met_by(sample):
                self.met_at = time.time()


def one_round(how: str, gib: float, gpu: int, baseline: int, residual: int, poll: float) -> dict:
    """Allocate in a child, start the cleanup loop, make the child free (empty_cache or exit).

    The threshold is the service's: used ≤ baseline + residual, or free ≥ need, where need is
    the free memory while allocated plus half the allocation (so only a real free meets it).
    """
    from handoffs.errors import PhaseFailed
    from handoffs.measure import Threshold, measure, wait_for_cleanup

    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(gib), str(gpu), how],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().startswith("allocated")
    allocated = measure(gpu)
    need = allocated.free_mib + int(gib * 1024) // 2
    threshold = Threshold(baseline_mib=baseline, residual_mib=residual, need_mib=need)
    met_before = threshold.met_by(allocated)
    watcher = DropWatcher(gpu, threshold)
    watcher.start()
    child.stdin.write("free\n")
    child.stdin.flush()
    try:
        figures = wait_for_cleanup(
            gpu, threshold, deadline=time.monotonic() + 20, poll_seconds=poll, pause=time.sleep
        )
        outcome = "freed"
    except PhaseFailed as failure:
        figures, outcome = failure.as_dict(), "timeout"
    detected_at = time.time()
    watcher.join(timeout=5)
    watcher.stop.set()
    freed_at = float(child.stdout.readline().split()[1])
    after = measure(gpu)
    if how != "exit":
        child.stdin.write("exit\n")
        child.stdin.flush()
    child.wait(timeout=60)
    lag = None if watcher.met_at is None else round(detected_at - watcher.met_at, 3)
    return {
        "release": how,
        "used_mib_allocated": allocated.used_mib,
        "saw_allocation_mib": allocated.used_mib - baseline,
        "threshold_met_before_free": met_before,
        "outcome": outcome,
        "met_by": "used<=baseline+residual"
        if after.used_mib <= threshold.max_used_mib
        else ("free>=need" if after.free_mib >= need else "none"),
        "used_mib_after": after.used_mib,
        "free_mib_after": after.free_mib,
        "child_freed_to_memory_dropped_seconds": None
        if watcher.met_at is None
        else round(watcher.met_at - freed_at, 3),
        "memory_dropped_to_loop_detected_seconds": lag,
        "detected_within_one_poll": lag is not None and lag <= poll,
        "watcher_samples": watcher.samples,
        "cleanup_loop": figures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=8.0)
    parser.add_argument("--poll-ms", type=int, default=100)
    parser.add_argument("--gpu", type=int, default=0)
    parser.add_argument("--residual-mib", type=int, default=512)
    args = parser.parse_args()

    from gaiaorch import telemetry

    first = telemetry.sample()
    if not first.available:
        raise SystemExit(f"nvml backend unavailable: {first.reason}")
    baseline = used(args.gpu)
    poll = args.poll_ms / 1000
    rounds = [
        one_round(how, args.gib, args.gpu, baseline, args.residual_mib, poll)
        for how in ("empty_cache", "exit")
    ]
    time.sleep(0.5)
    sample = telemetry.sample().gpu(args.gpu)
    print(
        json.dumps(
            {
                "gpu": {"name": sample.name, "total_mib": sample.total_mib},
                "allocated_gib": args.gib,
                "poll_seconds": poll,
                "residual_mib": args.residual_mib,
                "idle_baseline_mib": baseline,
                "used_mib_at_end": sample.used_mib,
                "rounds": rounds,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
