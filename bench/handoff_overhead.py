"""Orchestrator overhead of one GPU handoff, with instant fake GAIA services.

Runs N handoffs (alternating prime_to_study and study_to_prime) on the embedded default (SQLite
in WAL mode, django-q2's ORM broker) and reports, per handoff, the end-to-end time minus the time
the fake services spent answering: what gaiaorch itself costs.

    .venv/bin/python bench/handoff_overhead.py                 # phases run inline, as the task does
    .venv/bin/python bench/handoff_overhead.py --worker        # through a real qcluster process

Prints one JSON document. Uses a throw-away var directory; touches nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def configure(var_dir: Path, fakes: dict) -> None:
    import yaml

    from handoffs.tests.fakes import stack_config

    stack = stack_config(fakes["gaia-core"].url, fakes["gaia-prime"].url, fakes["gaia-study"].url)
    (var_dir / "orchestrator.yaml").write_text(yaml.safe_dump(stack))
    for name in [
        key for key in os.environ if key.startswith("GAIAORCH_") or key in ("DATABASE_URL", "REDIS_URL")
    ]:
        del os.environ[name]
    os.environ.update(
        DJANGO_SETTINGS_MODULE="gaiaorch.settings",
        GAIAORCH_CONFIG=str(var_dir / "orchestrator.yaml"),
        GAIAORCH_VAR_DIR=str(var_dir),
        GAIAORCH_GPU_BACKEND="fake",
        GAIAORCH_FAKE_GPU_FILE=str(var_dir / "fake-gpu.json"),
        GAIAORCH_WORKERS="1",
        GAIAORCH_LOG_LEVEL="WARNING",
    )


def start_fakes(var_dir: Path):
    from handoffs.tests.fakes import CONTRACT, FakeGpu, FakeService

    gpu = FakeGpu(var_dir / "fake-gpu.json", used_mib=11000)
    fakes = {name: FakeService(name, routes).start() for name, routes in CONTRACT.items()}
    fakes["gaia-prime"].on("/sleep", gpu.setter(600))
    fakes["gaia-study"].on("/study/gpu-release", gpu.setter(600))
    return gpu, fakes


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def one_handoff(kind: str, gpu, fakes: dict, worker: bool) -> tuple[float, float]:
    from handoffs import services
    from handoffs.models import TERMINAL, Handoff

    gpu.set(11000 if kind == "prime_to_study" else 17000)
    fake_before = sum(fake.busy_seconds for fake in fakes.values())
    started = time.perf_counter()
    handoff = services.start(type=kind, actor="bench")
    if not worker:
        services.run(handoff.id)
    while not Handoff.objects.filter(pk=handoff.pk, phase__in=TERMINAL).exists():
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    phase = Handoff.objects.get(pk=handoff.pk).phase
    if phase != "completed":
        raise SystemExit(f"handoff {handoff.id} ended as {phase}: {Handoff.objects.get(pk=handoff.pk).error}")
    fake_time = sum(fake.busy_seconds for fake in fakes.values()) - fake_before
    return elapsed, fake_time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--worker", action="store_true", help="run phases in a real qcluster process")
    args = parser.parse_args()
    var_dir = Path(tempfile.mkdtemp(prefix="gaiaorch-bench-"))
    gpu, fakes = start_fakes(var_dir)
    configure(var_dir, fakes)

    import django

    django.setup()
    from django.core.management import call_command

    from leases import services as leases

    call_command("migrate", verbosity=0)
    leases.acquire(requester="gaia-core", reason="bench", actor="bench")
    worker = None
    if args.worker:
        worker = subprocess.Popen([sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=os.environ.copy())
    try:
        one_handoff("prime_to_study", gpu, fakes, args.worker)  # warm-up: imports, first connections
        one_handoff("study_to_prime", gpu, fakes, args.worker)
        overheads, totals = [], []
        for number in range(args.count):
            kind = "prime_to_study" if number % 2 == 0 else "study_to_prime"
            elapsed, fake_time = one_handoff(kind, gpu, fakes, args.worker)
            totals.append(elapsed)
            overheads.append(elapsed - fake_time)
    finally:
        if worker:
            worker.terminate()
            worker.wait(timeout=30)
        for fake in fakes.values():
            fake.stop()
    ms = 1000
    print(
        json.dumps(
            {
                "handoffs": args.count,
                "mode": "qcluster worker (ORM broker)" if args.worker else "inline runner",
                "database": "sqlite (embedded default)",
                "overhead_ms": {
                    "p50": round(statistics.median(overheads) * ms, 1),
                    "p99": round(percentile(overheads, 0.99) * ms, 1),
                    "max": round(max(overheads) * ms, 1),
                },
                "end_to_end_ms": {"p50": round(statistics.median(totals) * ms, 1)},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
