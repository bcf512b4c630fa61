"""Event-to-client latency of /ws/notifications with many connected clients.

Starts daphne and the django-q2 worker on a fresh embedded database (SQLite, in-memory channel
layer: the default), connects N WebSocket clients, and has the worker record events at a steady
rate. Latency is the time from the event's created_at (set in the worker, just before commit) to
its arrival at each client. Run from the repository root:

    .venv/bin/python bench/notifications_latency.py --clients 100 --events 300 --rate 20
    .venv/bin/python bench/notifications_latency.py --database-url postgres://postgres@127.0.0.1:5432/<db> \
        --redis-url redis://127.0.0.1:6379/<n>       # PostgreSQL + Redis (channel layer and broker)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import websockets  # noqa: E402

from notifications.tests.stack import Stack  # noqa: E402


def enqueuer(stack: Stack):
    """This process joins the stack's database so it can queue tasks for the worker."""
    os.environ.update(stack.env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gaiaorch.settings")
    import django

    django.setup()
    from django_q.tasks import async_task

    return lambda n: async_task("notifications.tasks.emit_event", "manual.event", f"tick {n}", "", {})


async def listen(url: str, expected: int, latencies: list[float], ready: asyncio.Event, counts: list[int]):
    async with websockets.connect(url, max_size=None) as socket:
        ready.set()
        received = 0
        while received < expected:
            message = json.loads(await socket.recv())
            arrived = time.time()
            if message["notification_type"] != "manual.event":
                continue
            latencies.append(arrived - datetime.fromisoformat(message["timestamp"]).timestamp())
            received += 1
        counts.append(received)


async def produce(queue_event, events: int, rate: float) -> None:
    started = time.monotonic()
    for n in range(events):
        await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
        await asyncio.to_thread(queue_event, n)


async def run(args) -> dict:
    urls = {"DATABASE_URL": args.database_url, "REDIS_URL": args.redis_url}
    env = {"GAIAORCH_WORKERS": str(args.workers), **{k: v for k, v in urls.items() if v}}
    stack = Stack(Path(tempfile.mkdtemp(prefix="gaiaorch-bench-")), env=env)
    stack.start("web", "worker")
    try:
        queue_event = enqueuer(stack)
        latencies: list[float] = []
        counts: list[int] = []
        readies = [asyncio.Event() for _ in range(args.clients)]
        url = stack.ws_url("types=manual.event")
        listeners = [
            asyncio.create_task(listen(url, args.events, latencies, ready, counts)) for ready in readies
        ]
        await asyncio.wait_for(asyncio.gather(*(ready.wait() for ready in readies)), 60)
        await asyncio.sleep(1)
        await produce(queue_event, args.events, args.rate)
        await asyncio.wait_for(asyncio.gather(*listeners), 120)
    finally:
        stack.stop()
    ordered = sorted(latencies)

    def percentile(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] * 1000

    return {
        "database": "postgresql" if args.database_url else "sqlite (embedded default)",
        "channel_layer": "redis" if args.redis_url else "in-memory",
        "clients": args.clients,
        "events": args.events,
        "rate_per_second": args.rate,
        "samples": len(ordered),
        "all_clients_got_all_events": counts == [args.events] * args.clients,
        "p50_ms": round(percentile(50), 1),
        "p90_ms": round(percentile(90), 1),
        "p99_ms": round(percentile(99), 1),
        "max_ms": round(ordered[-1] * 1000, 1),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 1),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--rate", type=float, default=20.0, help="events per second made by the worker")
    parser.add_argument("--workers", type=int, default=2, help="django-q2 worker processes")
    parser.add_argument("--database-url", help="a PostgreSQL database of the benchmark's own")
    parser.add_argument("--redis-url", help="Redis as the channel layer and the broker")
    print(json.dumps(asyncio.run(run(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
