"""Latency of GET /containers/status with 50 managed containers, through a real daphne server.

The status is served from the database: the server runs with GAIAORCH_DOCKER_URL pointing at a
socket that does not exist, so any Docker round trip per request would show up as an error.

    .venv/bin/python bench/containers_status.py [--requests 1000] [--services 50]

Uses a throw-away SQLite database under a temporary directory (or DATABASE_URL when set).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent


def stack(count: int) -> dict:
    services = {}
    for index in range(count):
        stack_name = "live" if index % 2 == 0 else "candidate"
        services[f"svc-{index:02d}"] = {
            "stack": stack_name,
            "role": f"role-{index // 2:02d}",
            "container_name": f"bench-svc-{index:02d}",
            "port": 20000 + index,
            "health_url": f"http://127.0.0.1:{20000 + index}/health",
            "gpu": index % 5 == 0,
            "vram_mib": [4096, 2048] if index % 10 == 0 else None,
            "depends_on": [f"svc-{index - 2:02d}"] if index >= 2 else [],
        }
    return {
        "docker": {"reconcile_interval_seconds": 600},
        "stacks": {"live": {"gpu_requester": "svc-00"}, "candidate": {"gpu_requester": "svc-01"}},
        "services": services,
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare(env: dict[str, str]) -> None:
    """Migrate and fill the reality rows as the ticker would have (in this process, same env)."""
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command
    from django.utils import timezone

    from containers.models import Container, DockerStatus
    from gaiaorch import config

    call_command("migrate", verbosity=0)
    now = timezone.now()
    for service in config.current().containers():
        Container.objects.update_or_create(
            service=service.name,
            defaults={
                "stack": service.stack,
                "role": service.role,
                "container_id": f"{abs(hash(service.name)):064x}"[:64],
                "name": service.container_name,
                "image": f"gaia/{service.role}:latest",
                "state": "running",
                "health": "healthy",
                "started_at": now,
                "device_requests": [{"Driver": "nvidia", "DeviceIDs": ["0"]}] if service.gpu else [],
                "last_seen_at": now,
            },
        )
    DockerStatus.objects.update_or_create(pk=1, defaults={"available": True, "checked_at": now})


def measure(url: str, requests: int) -> list[float]:
    timings = []
    with httpx.Client(timeout=10) as client:
        for _ in range(50):  # warm-up
            client.get(url).raise_for_status()
        for _ in range(requests):
            began = time.perf_counter()
            response = client.get(url)
            timings.append((time.perf_counter() - began) * 1000)
            response.raise_for_status()
        body = client.get(url).json()
    assert len(body["services"]) and body["docker_available"], body
    assert {entry["state"] for entry in body["services"]} == {"running"}
    return timings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--services", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config_file = Path(tmp) / "orchestrator.yaml"
        config_file.write_text(yaml.safe_dump(stack(args.services)))
        port = free_port()
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "gaiaorch.settings",
            "GAIAORCH_CONFIG": str(config_file),
            "GAIAORCH_VAR_DIR": tmp,
            "GAIAORCH_DOCKER_URL": f"unix://{tmp}/no-docker-here.sock",
            "GAIAORCH_LOG_LEVEL": "WARNING",
        }
        prepare(env)
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daphne",
                "-v",
                "0",
                "-b",
                "127.0.0.1",
                "-p",
                str(port),
                "console.asgi:application",
            ],
            env=env,
            cwd=ROOT,
        )
        try:
            url = f"http://127.0.0.1:{port}/containers/status"
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.2)
            timings = sorted(measure(url, args.requests))
        finally:
            server.terminate()
            server.wait(timeout=10)
    quantile = statistics.quantiles(timings, n=100)
    print(f"GET /containers/status, {args.services} managed containers, {args.requests} sequential requests")
    print(
        f"mean {statistics.mean(timings):.2f} ms  p50 {quantile[49]:.2f} ms  p95 {quantile[94]:.2f} ms  "
        f"p99 {quantile[98]:.2f} ms  max {timings[-1]:.2f} ms"
    )


if __name__ == "__main__":
    main()
