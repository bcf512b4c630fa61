"""A real busybox container's process attributed to its service through its cgroup and Docker.

The fake telemetry file names the container's PID (`docker inspect` State.Pid) as a GPU process;
gaiaorch.attribution reads /proc/<pid>/cgroup, lists the running containers once and finds the
service by the compose labels or the container name, exactly as on a GPU box.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from containers.tests.conftest import PREFIX, RUN_ID, RUN_LABEL
from gaiaorch import attribution, telemetry
from gaiaorch.attribution import ContainerDirectory, ServiceMatch

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PROJECT = f"{PREFIX}-attr"


@pytest.fixture
def container(docker_client, busybox_image):
    """A running busybox labelled like a compose service `gaia-prime` of project PROJECT."""
    name = f"{PREFIX}-prime-{uuid.uuid4().hex[:4]}"
    created = docker_client.containers.run(
        busybox_image,
        ["sleep", "300"],
        name=name,
        detach=True,
        labels={
            RUN_LABEL: RUN_ID,
            attribution.COMPOSE_PROJECT: PROJECT,
            attribution.COMPOSE_SERVICE: "gaia-prime",
        },
    )
    created.reload()
    yield created
    created.remove(force=True)


@pytest.fixture
def gpu_file(tmp_path, settings):
    path = tmp_path / "fake-gpu.json"
    settings.GPU_BACKEND = "fake"
    settings.FAKE_GPU_FILE = str(path)

    def write(processes: dict[int, int]) -> None:
        entry = {"index": 0, "total_mib": 143771, "reserved_mib": 615, "used_mib": sum(processes.values())}
        entry["processes"] = [{"pid": pid, "used_mib": mib} for pid, mib in processes.items()]  # type: ignore[assignment]
        telemetry.write_fake(path, [entry])

    return write


def directory(url: str = "unix:///var/run/docker.sock") -> ContainerDirectory:
    return ContainerDirectory(url, timeout_seconds=5)


def test_it_attributes_a_containers_process_to_its_compose_service(container, gpu_file):
    pid = container.attrs["State"]["Pid"]
    assert container.id in attribution.container_ids(Path(f"/proc/{pid}/cgroup").read_text())
    gpu_file({pid: 30000})
    services = [
        ServiceMatch("gaia-study", compose_project=PROJECT, compose_service="gaia-study"),
        ServiceMatch("gaia-prime", compose_project=PROJECT, compose_service="gaia-prime"),
    ]
    containers = directory()
    gpu = attribution.attribute(telemetry.sample(), services, containers=containers).gpu(0)
    assert gpu.available, gpu.reason
    (owner,) = gpu.processes
    assert (owner.pid, owner.service, owner.matched_by) == (pid, "gaia-prime", "container")
    assert owner.container == container.name and owner.command == "sleep 300"
    assert gpu.service_mib("gaia-prime") == 30000
    attribution.attribute(telemetry.sample(), services, containers=containers)
    assert containers.list_calls == 1  # the second sample reused the listing


def test_it_attributes_a_containers_process_by_container_name(container, gpu_file):
    pid = container.attrs["State"]["Pid"]
    gpu_file({pid: 1000})
    services = [ServiceMatch("gaia-core-candidate", container_name=container.name)]
    gpu = attribution.attribute(telemetry.sample(), services, containers=directory()).gpu(0)
    assert gpu.processes[0].service == "gaia-core-candidate"


def test_it_leaves_a_container_of_no_service_unattributed_with_its_name(container, gpu_file):
    pid = container.attrs["State"]["Pid"]
    gpu_file({pid: 9100})
    services = [ServiceMatch("gaia-prime", compose_project="another-project", compose_service="gaia-prime")]
    gpu = attribution.attribute(telemetry.sample(), services, containers=directory()).gpu(0)
    assert gpu.available
    (owner,) = gpu.unattributed
    assert (owner.pid, owner.container, owner.used_mib) == (pid, container.name, 9100)


def test_it_still_matches_processes_when_docker_is_down(container, gpu_file):
    token = f"gaia-fake-{uuid.uuid4().hex[:10]}"
    outside = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", token])
    try:
        pid = container.attrs["State"]["Pid"]
        gpu_file({pid: 30000, outside.pid: 2000})
        services = [
            ServiceMatch("gaia-prime", compose_project=PROJECT, compose_service="gaia-prime"),
            ServiceMatch("gaia-study", cmdline=token),
        ]
        down = directory("unix:///nonexistent/docker.sock")
        result = attribution.attribute(telemetry.sample(), services, containers=down)
    finally:
        outside.kill()
        outside.wait()
    gpu = result.gpu(0)
    assert "could not list containers" in result.containers_reason
    assert gpu.service_mib("gaia-study") == 2000  # process matching still works
    assert not gpu.available  # but the container's 30000 MiB cannot be told apart
    assert f"pid {pid} (30000 MiB) on GPU 0: it runs in a container: Docker at" in gpu.reason
    assert gpu.unattributed == ()
