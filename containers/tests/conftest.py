"""Fixtures for the containers app: a test configuration and, for slow tests, the real Docker Engine.

Docker tests build a tiny image FROM scratch with the static busybox (no registry needed), label
every container and network with this run's id, publish ports on 127.0.0.1 only and remove
everything they made (per-fixture finalizers plus a sweep by label at the end of the session).
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import tarfile
import threading
import uuid
from pathlib import Path

import docker
import pytest
from django.db import connection

from containers import runner, services

RUN_LABEL = "org.gaiaorch.test-run"
RUN_ID = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
PREFIX = f"gt{uuid.uuid4().hex[:6]}"
BUSYBOX = Path("/bin/busybox")

# An HTTP service that answers /health and /id, and exits on SIGTERM like a well-behaved server.
HTTP_SERVICE = (
    "trap 'exit 0' TERM; mkdir -p /www; echo $SERVICE_ID > /www/id; echo ok > /www/health; "
    "httpd -p 8080 -h /www; while true; do sleep 0.2; done"
)
# A service that ignores SIGTERM: only SIGKILL stops it.
STUBBORN_SERVICE = "trap '' TERM; while true; do sleep 0.2; done"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_service(name: str, stack: str, role: str, image: str, **extra) -> dict:
    port = free_port()
    return {
        "stack": stack,
        "role": role,
        "container_name": f"{PREFIX}-{name}",
        "network_alias": role if stack == "live" else f"{role}-candidate",
        "port": port,
        "health_url": f"http://127.0.0.1:{port}/health",
        "stop_timeout_seconds": 5,
        "health_timeout_seconds": 20,
        "container": {
            "image": image,
            "command": ["sh", "-c", HTTP_SERVICE],
            "environment": {"SERVICE_ID": name},
            "ports": {"8080/tcp": f"127.0.0.1:{port}"},
            "labels": {RUN_LABEL: RUN_ID},
        },
        **extra,
    }


def stack_config(image: str, network: str = "") -> dict:
    """Live: mcp <- core <- web, plus a stubborn worker; candidate: mcp <- core (GPU, two models)."""
    services_ = {
        "t-mcp": http_service("t-mcp", "live", "mcp", image),
        "t-core": http_service("t-core", "live", "core", image, depends_on=["t-mcp"], gpu=True),
        "t-web": http_service("t-web", "live", "web", image, depends_on=["t-core"]),
        "t-stubborn": {
            "stack": "live",
            "role": "stubborn",
            "container_name": f"{PREFIX}-t-stubborn",
            "stop_timeout_seconds": 2,
            "container": {
                "image": image,
                "command": ["sh", "-c", STUBBORN_SERVICE],
                "labels": {RUN_LABEL: RUN_ID},
            },
        },
        "t-mcp-candidate": http_service("t-mcp-candidate", "candidate", "mcp", image),
        "t-core-candidate": http_service(
            "t-core-candidate",
            "candidate",
            "core",
            image,
            depends_on=["t-mcp-candidate"],
            gpu=True,
            vram_mib=[4096, 2048],
        ),
    }
    return {
        "orchestrator": {"own_container": f"{PREFIX}-orchestrator"},
        "docker": {"reconcile_interval_seconds": 1, **({"network": network} if network else {})},
        "stacks": {"live": {"gpu_requester": "t-core"}, "candidate": {"gpu_requester": "t-core-candidate"}},
        "services": services_,
    }


@pytest.fixture
def fake_gpu(settings, tmp_path):
    """A fake GPU whose VRAM figures a test sets: fake_gpu(total_mib, used_mib)."""
    path = tmp_path / "fake-gpu.json"
    settings.GPU_BACKEND = "fake"
    settings.FAKE_GPU_FILE = str(path)

    def set_figures(total_mib: int = 24576, used_mib: int = 512) -> None:
        from gaiaorch.telemetry import write_fake

        write_fake(path, [{"index": 0, "total_mib": total_mib, "used_mib": used_mib}])

    set_figures()
    return set_figures


@pytest.fixture
def run_inline(monkeypatch):
    """Operations run in the committing thread, as the worker would run them."""
    monkeypatch.setattr(services, "enqueue", runner.run)


@pytest.fixture
def run_in_thread(monkeypatch):
    """Operations run in a background thread, like a worker process beside the web process."""
    threads: list[threading.Thread] = []

    def work(operation_id: int) -> None:
        try:
            runner.run(operation_id)
        finally:
            connection.close()  # as the worker process does when a task ends

    def enqueue(operation_id: int) -> None:
        thread = threading.Thread(target=work, args=(operation_id,), daemon=True)
        threads.append(thread)
        thread.start()

    monkeypatch.setattr(services, "enqueue", enqueue)
    yield threads
    for thread in threads:
        thread.join(timeout=60)


# --- the real Docker Engine --------------------------------------------------------------------


def _sweep(client: docker.DockerClient, run_id: str) -> None:
    for container in client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={run_id}"}):
        container.remove(force=True)
    for network in client.networks.list(filters={"label": f"{RUN_LABEL}={run_id}"}):
        network.remove()


def _abandoned(run_id: str) -> bool:
    """A run on this host whose test process is gone (killed before its finalizers ran)."""
    host, pid, _ = ([*run_id.rsplit("-", 2), "", ""])[:3]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass
    return False


def _sweep_leftovers(client: docker.DockerClient) -> None:
    for container in client.containers.list(all=True, filters={"label": RUN_LABEL}):
        if _abandoned(container.labels.get(RUN_LABEL, "")):
            container.remove(force=True)
    for network in client.networks.list(filters={"label": RUN_LABEL}):
        if _abandoned((network.attrs.get("Labels") or {}).get(RUN_LABEL, "")):
            network.remove()


@pytest.fixture(scope="session")
def docker_client():
    try:
        client = docker.DockerClient(base_url="unix:///var/run/docker.sock", version="1.41", timeout=30)
        client.ping()
    except Exception as exc:
        pytest.fail(
            f"These tests need a Docker Engine on /var/run/docker.sock ({exc}); start it: scripts/provision"
        )
    _sweep_leftovers(client)
    yield client
    _sweep(client, RUN_ID)
    client.close()


@pytest.fixture(scope="session")
def busybox_image(docker_client) -> str:
    """A one-binary image built locally FROM scratch (no registry is reachable)."""
    if not BUSYBOX.exists() or not shutil.which("busybox"):
        pytest.fail("These tests need the static busybox at /bin/busybox: apt-get install busybox-static")
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        tar.add(BUSYBOX, arcname="busybox")
        dockerfile = (
            b'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
        )
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(dockerfile)
        tar.addfile(info, io.BytesIO(dockerfile))
    context.seek(0)
    tag = "gaiaorch-test-busybox:latest"
    docker_client.images.build(
        fileobj=context, custom_context=True, tag=tag, labels={RUN_LABEL: "image"}, rm=True
    )
    return tag


@pytest.fixture
def test_network(docker_client):
    network = docker_client.networks.create(
        f"{PREFIX}-{uuid.uuid4().hex[:4]}-net", labels={RUN_LABEL: RUN_ID}
    )
    yield network.name
    for container in docker_client.containers.list(all=True, filters={"network": network.name}):
        container.remove(force=True)
    network.remove()


@pytest.fixture
def docker_stack(settings, docker_client, busybox_image, test_network, transactional_db, run_inline):
    """Settings pointing at this run's busybox services on the real Docker Engine."""
    settings.GAIAORCH = stack_config(busybox_image, test_network)
    settings.DOCKER_URL = "unix:///var/run/docker.sock"
    yield settings.GAIAORCH
    for container in docker_client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={RUN_ID}"}):
        container.remove(force=True)


@pytest.fixture
def inspect(docker_client):
    def inspect_container(config: dict, service: str) -> dict | None:
        name = config["services"][service]["container_name"]
        try:
            return docker_client.api.inspect_container(name)
        except docker.errors.NotFound:
            return None

    return inspect_container
