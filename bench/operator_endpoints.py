"""Latency of GET /status, /ready and /metrics through a real daphne server, with a history.

The database is filled as a busy box would leave it: LEASES ended leases (each with its
requested/granted/released events), HANDOFFS completed handoffs with five phase records each
(the cleanup's with the figures of a verified release, so the reclaim histogram has rows).
/metrics folds these rows once (console.metrics) and then counts only what is newer; /status
and /ready do not read them. The first /metrics of a fresh server is timed on its own, once after
the history is written and once more after a restart of the server on the same database; the
floor (bench/floor_app.py under the same daphne) is timed in the same run.

    .venv/bin/python bench/operator_endpoints.py [--requests 300] [--leases 10000] [--handoffs 500]
        [--history LEASES EVENTS]   # and a busy box's past written in SQL (bench/leases_setup.py)

Uses a throw-away SQLite database under a temporary directory (or DATABASE_URL when set).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.containers_status import free_port  # noqa: E402

PATHS = ["/status", "/ready", "/metrics"]


def fill(env: dict[str, str], leases: int, handoffs: int, history: tuple[int, int] | None = None) -> None:
    """Migrate and write the history in bulk (as the services would have, minus the waiting)."""
    os.environ.update(env)
    import django

    django.setup()
    from django.core.management import call_command
    from django.utils import timezone

    from containers.services import docker_reachable
    from gaiaorch import services
    from handoffs.models import Handoff, HandoffPhase, Phase
    from leases.models import Gpu, Lease
    from notifications.models import Event

    call_command("migrate", verbosity=0)
    now = timezone.now()
    gpu, _ = Gpu.objects.get_or_create(index=0)
    rows, events = [], []
    for number in range(leases):
        requested = now - timedelta(seconds=leases - number)
        rows.append(
            Lease(
                gpu=gpu,
                requester="gaia-study",
                status="released",
                arrival=number + 1,
                fencing_token=number + 1,
                requested_at=requested,
                granted_at=requested + timedelta(milliseconds=number % 900),
                ended_at=requested + timedelta(seconds=1),
            )
        )
    Lease.objects.bulk_create(rows, batch_size=2000)
    for lease in Lease.objects.all().iterator():
        for kind in ("requested", "granted", "released"):
            events.append(
                Event(
                    type=f"lease.{kind}",
                    title=kind,
                    actor="bench",
                    subject_kind="lease",
                    subject_id=str(lease.id),
                    created_at=lease.requested_at,
                )
            )
    Event.objects.bulk_create(events, batch_size=2000)
    Gpu.objects.filter(pk=gpu.pk).update(next_fencing_token=leases + 1, next_arrival=leases + 1)
    for number in range(handoffs):
        started = now - timedelta(minutes=handoffs - number)
        handoff = Handoff.objects.create(
            type="prime_to_study",
            source="gaia-core",
            destination="gaia-study",
            requested_by="bench",
            phase=Phase.COMPLETED,
            created_at=started,
            completed_at=started + timedelta(seconds=20),
        )
        HandoffPhase.objects.bulk_create(
            HandoffPhase(
                handoff=handoff,
                name=name,
                started_at=started + timedelta(seconds=index * 4),
                finished_at=started + timedelta(seconds=index * 4 + 3),
                outcome="succeeded",
                figures=cleanup_figures(number) if name == Phase.WAITING_CUDA_CLEANUP else {},
            )
            for index, name in enumerate(
                [
                    Phase.INITIATED,
                    Phase.RELEASING_GPU,
                    Phase.WAITING_CUDA_CLEANUP,
                    Phase.TRANSFERRING_OWNERSHIP,
                    Phase.SIGNALING_RECIPIENT,
                ]
            )
        )
    if history:
        from bench.leases_setup import history as write_history

        write_history(*history)
    docker_reachable(reachable=True)
    services.stamp_worker_heartbeat()


def cleanup_figures(number: int) -> dict:
    """What a verified release records (handoffs.cleanup), so the reclaim histogram has rows."""
    reclaim = {"service": "gaia-prime", "step": 1 + number % 2, "action": "vllm", "seconds": 0.5 + number % 7}
    return {"seconds": 2.5, "rule": "released", "reclaim": reclaim}


@contextmanager
def serving(command: list[str], env: dict[str, str], client: httpx.Client, base: str) -> Iterator[None]:
    """A daphne server of the project, up (it answers /health) until the block ends."""
    server = subprocess.Popen([sys.executable, *command], env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                client.get(f"{base}/health")
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:  # busy in a request that outlived the client's timeout
            server.kill()
            server.wait()


def first_scrape(client: httpx.Client, base: str) -> float:
    """The first GET /metrics a fresh server answers, in ms (nothing of it is warm yet)."""
    began = time.perf_counter()
    response = client.get(base + "/metrics")
    assert response.status_code == 200, response.text
    return (time.perf_counter() - began) * 1000


def measure(client: httpx.Client, url: str, requests: int) -> list[float]:
    for _ in range(10):  # warm-up
        client.get(url)
    timings = []
    for _ in range(requests):
        began = time.perf_counter()
        response = client.get(url)
        timings.append((time.perf_counter() - began) * 1000)
        assert response.status_code in (200, 503), response.text
    return sorted(timings)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--leases", type=int, default=10000)
    parser.add_argument("--handoffs", type=int, default=500)
    parser.add_argument(
        "--history",
        type=int,
        nargs=2,
        metavar=("LEASES", "EVENTS"),
        help="also add this many ended leases and events, written in SQL",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        fake = Path(tmp) / "fake-gpu.json"
        fake.write_text('{"gpus": [{"index": 0, "total_mib": 24576, "used_mib": 600}]}')
        port = free_port()
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "gaiaorch.settings",
            "GAIAORCH_VAR_DIR": tmp,
            "GAIAORCH_GPU_BACKEND": "fake",
            "GAIAORCH_FAKE_GPU_FILE": str(fake),
            "GAIAORCH_DOCKER_URL": f"unix://{tmp}/no-docker-here.sock",
            "GAIAORCH_LOG_LEVEL": "WARNING",
        }
        fill(env, args.leases, args.handoffs, args.history)
        command = ["-m", "daphne", "-v", "0", "-b", "127.0.0.1", "-p", str(port), "console.asgi:application"]
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(timeout=60) as client:
            with serving(command, env, client, base):
                first = {"after start": first_scrape(client, base)}
                results = {path: measure(client, base + path, args.requests) for path in PATHS}
            with serving(command, env, client, base):  # the same database, a fresh process
                first["after a restart"] = first_scrape(client, base)
            with serving([*command[:-1], "bench.floor_app:application"], env, client, base):
                floor = measure(client, base + "/metrics", args.requests)  # any path: the same JSON
    extra = f" + {args.history[0]} ended leases and {args.history[1]} events in SQL" if args.history else ""
    print(
        f"{args.leases} ended leases, {3 * args.leases} events, {args.handoffs} handoffs x 5 phases{extra}; "
        f"{args.requests} sequential requests each"
    )
    floor_p50 = statistics.median(floor)
    print(f"floor (bare ASGI) GET  p50 {floor_p50:7.2f} ms")
    for path, timings in results.items():
        quantile = statistics.quantiles(timings, n=100)
        print(
            f"GET {path:<8} ({quantile[49] / floor_p50:5.1f}x floor) "
            f"mean {statistics.mean(timings):7.2f} ms  "
            f"p50 {quantile[49]:7.2f} ms  "
            f"p95 {quantile[94]:7.2f} ms  max {timings[-1]:7.2f} ms"
        )
    for when, ms in first.items():
        print(f"GET /metrics, first scrape {when}: {ms:7.2f} ms ({ms / floor_p50:5.1f}x floor)")


if __name__ == "__main__":
    main()
