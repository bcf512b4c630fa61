"""GPU memory attributed to services through real processes: pidfiles, command lines, children.

The fake telemetry file lists real PIDs (subprocesses of this test), so the lookup reads the real
/proc, as it does on a GPU box. The Docker half (a real busybox container's PID attributed through
its cgroup) is in containers/tests/test_gpu_attribution.py, beside the Docker fixtures.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from gaiaorch import attribution, telemetry
from gaiaorch.attribution import ContainerDirectory, Listing, ServiceMatch

CONTAINER = "3f" * 32
# One line, so a command line shows its arguments within COMMAND_LIMIT characters.
PARENT = (
    "import subprocess as s,sys,time;c=s.Popen([sys.executable,'-c','import time;time.sleep(99)']);"
    "print(c.pid,flush=True);time.sleep(99)"
)


class Tree:
    """A real process that started a child: both are GPU processes in the fake file."""

    def __init__(self, *argv: str):
        self.popen = subprocess.Popen(
            [sys.executable, "-c", PARENT, *argv], stdout=subprocess.PIPE, text=True
        )
        self.pid = self.popen.pid
        self.child = int(self.popen.stdout.readline())  # type: ignore[union-attr]

    def stop(self) -> None:
        self.popen.kill()
        self.popen.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.child, signal.SIGKILL)


@pytest.fixture
def processes():
    started: list[Tree] = []

    def start(*argv: str) -> Tree:
        started.append(Tree(*argv))
        return started[-1]

    yield start
    for tree in started:
        tree.stop()


@pytest.fixture
def gpu_file(tmp_path, settings):
    """Write what NVML shows on GPU 0: {pid: MiB}; used = their sum unless given."""
    path = tmp_path / "fake-gpu.json"
    settings.GPU_BACKEND = "fake"
    settings.FAKE_GPU_FILE = str(path)

    def write(processes: dict[int, int], used_mib: int | None = None, reserved_mib: int | None = 615):
        entry = {
            "index": 0,
            "total_mib": 143771,
            "used_mib": sum(processes.values()) if used_mib is None else used_mib,
            "processes": [{"pid": pid, "used_mib": mib} for pid, mib in processes.items()],
        }
        if reserved_mib is not None:
            entry["reserved_mib"] = reserved_mib
        telemetry.write_fake(path, [entry])

    return write


def token() -> str:
    return f"gaia-fake-{uuid.uuid4().hex[:10]}"


def attribute(*services: ServiceMatch, **options) -> attribution.GpuAttribution:
    return attribution.attribute(telemetry.sample(), services, **options).gpu(0)  # type: ignore[return-value]


def test_it_attributes_a_process_and_its_child_by_command_line(processes, gpu_file):
    study = token()
    tree = processes("--serve", study)
    gpu_file({tree.pid: 9000, tree.child: 1000})
    gpu = attribute(
        ServiceMatch("gaia-prime", cmdline="vllm serve"), ServiceMatch("gaia-study", cmdline=study)
    )
    assert gpu.available, gpu.reason
    owners = {owner.pid: (owner.service, owner.matched_by) for owner in gpu.processes}
    assert owners == {tree.pid: ("gaia-study", "cmdline"), tree.child: ("gaia-study", "cmdline")}
    assert gpu.service_mib("gaia-study") == 10000
    assert gpu.by_service() == {"gaia-study": 10000}
    assert gpu.unattributed == ()


def test_it_attributes_a_process_and_its_child_by_pidfile(processes, gpu_file, tmp_path):
    tree = processes(token())
    pidfile = tmp_path / "prime.pid"
    pidfile.write_text(f"{tree.pid}\n")
    gpu_file({tree.pid: 30000, tree.child: 2000})
    gpu = attribute(ServiceMatch("gaia-prime", pidfile=str(pidfile)))
    assert [(o.pid, o.service, o.matched_by) for o in gpu.processes] == [
        (tree.pid, "gaia-prime", "pidfile"),
        (tree.child, "gaia-prime", "pidfile"),
    ]
    assert gpu.service_mib("gaia-prime") == 32000


def test_it_leaves_a_process_of_no_service_unattributed_with_its_command_line(processes, gpu_file):
    stranger = processes("train.py", "--epochs", "x" * 400)
    gpu_file({stranger.pid: 9100})
    gpu = attribute(ServiceMatch("gaia-study", cmdline=token()))
    assert gpu.available
    (owner,) = gpu.unattributed
    assert (owner.pid, owner.used_mib, owner.service) == (stranger.pid, 9100, None)
    assert owner.command.startswith(sys.executable) and "train.py --epochs xxx" in owner.command
    assert len(owner.command) == attribution.COMMAND_LIMIT
    assert gpu.unattributed_mib == 9100 and gpu.by_service() == {}


def test_it_reports_an_unreadable_pidfile_and_still_matches_by_command_line(processes, gpu_file, tmp_path):
    study = token()
    tree = processes(study)
    gpu_file({tree.pid: 500})
    services = [
        ServiceMatch("gaia-prime", pidfile=str(tmp_path / "missing.pid")),
        ServiceMatch("gaia-study", cmdline=study),
    ]
    result = attribution.attribute(telemetry.sample(), services)
    assert result.gpu(0).service_mib("gaia-study") == 500
    assert len(result.problems) == 1 and "gaia-prime: pidfile" in result.problems[0]


def test_it_says_attribution_is_unavailable_when_nvml_lists_no_process_for_the_memory_in_use(gpu_file):
    gpu_file({}, used_mib=94009)
    gpu = attribute(ServiceMatch("gaia-prime", cmdline="vllm"))
    assert not gpu.available
    assert "lists no process on GPU 0 while 94009 MiB beyond the driver's reservation" in gpu.reason


def test_it_keeps_the_reservation_out_of_what_must_be_attributed(gpu_file):
    gpu_file({}, used_mib=0, reserved_mib=615)
    gpu = attribute()
    assert gpu.available and gpu.reserved_mib == 615 and gpu.unlisted_mib == 0
    gpu_file({}, used_mib=615, reserved_mib=None)  # the same GPU seen through memory info v1
    gpu = attribute()
    assert not gpu.available and "v1" in gpu.reason


def test_it_says_attribution_is_unavailable_for_a_pid_this_namespace_does_not_show(gpu_file):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    gpu_file({gone.pid: 4000})
    gpu = attribute()
    assert not gpu.available
    assert f"pid {gone.pid} (4000 MiB) on GPU 0" in gpu.reason and "pid: host" in gpu.reason
    assert gpu.unattributed == ()


def test_it_says_so_when_telemetry_is_unavailable(settings):
    settings.GPU_BACKEND = "none"
    result = attribution.attribute(telemetry.sample(), [])
    assert not result.available and "off" in result.reason


def test_it_never_raises(monkeypatch, gpu_file, processes):
    tree = processes(token())
    gpu_file({tree.pid: 100})
    monkeypatch.setattr(attribution.ProcTable, "ancestry", lambda self, pid: 1 / 0)
    gpu = attribute(ServiceMatch("gaia-study", cmdline="x"))
    assert not gpu.available and "ZeroDivisionError" in gpu.reason


# --- containers, without Docker: the cgroup forms and the directory's caching -----------------


@pytest.mark.parametrize(
    "cgroup, expected",
    [
        (f"12:memory:/docker/{CONTAINER}\n11:cpu:/docker/{CONTAINER}\n0::/docker/{CONTAINER}", (CONTAINER,)),
        (f"0::/system.slice/docker-{CONTAINER}.scope", (CONTAINER,)),
        (f"0::/kubepods/besteffort/pod1/cri-containerd-{CONTAINER}.scope", (CONTAINER,)),
        (
            f"0::/../../system.slice/docker-{CONTAINER}.scope/init",
            (CONTAINER,),
        ),  # seen from a cgroup namespace
        (f"0::/docker/{'a' * 64}/docker/{CONTAINER}", ("a" * 64, CONTAINER)),  # nested: innermost last
        ("0::/process_api/959e07e21fb28b58cd3fa3ecd53417bd", ()),
        ("0::/user.slice/user-1000.slice/session-2.scope", ()),
    ],
)
def test_it_finds_the_container_id_in_every_cgroup_form(cgroup, expected):
    assert attribution.container_ids(cgroup) == expected


def fake_proc(root: Path, pid: int, cgroup: str, command: str = "python serve.py", parent: int = 1) -> None:
    (root / str(pid)).mkdir(parents=True)
    (root / str(pid) / "stat").write_text(f"{pid} (python (x)) S {parent} 1 1 0 -1")
    (root / str(pid) / "cmdline").write_bytes(command.replace(" ", "\0").encode() + b"\0")
    (root / str(pid) / "cgroup").write_text(cgroup)


class Directory:
    """A container directory answering from a fixed listing (the real one is tested against Docker)."""

    def __init__(self, listing: Listing):
        self.listing = listing
        self.asked: list[set[str]] = []

    def lookup(self, container_ids):
        self.asked.append(container_ids)
        return self.listing


def test_it_attributes_a_systemd_scoped_container_to_its_compose_service(tmp_path, gpu_file):
    fake_proc(tmp_path, 77, f"0::/system.slice/docker-{CONTAINER}.scope")
    gpu_file({77: 30000})
    labels = {attribution.COMPOSE_PROJECT: "gaia", attribution.COMPOSE_SERVICE: "gaia-prime"}
    directory = Directory(Listing({CONTAINER: attribution.Container(CONTAINER, "gaia-prime-1", labels)}))
    gpu = attribute(
        ServiceMatch("gaia-prime", compose_project="gaia", compose_service="gaia-prime"),
        containers=directory,
        proc=tmp_path,
    )
    (owner,) = gpu.processes
    assert (owner.service, owner.matched_by, owner.container) == ("gaia-prime", "container", "gaia-prime-1")
    assert directory.asked == [{CONTAINER}]


def test_it_falls_back_to_process_matching_for_a_container_of_no_service(tmp_path, gpu_file):
    fake_proc(tmp_path, 78, f"0::/docker/{CONTAINER}", command="python -m study.serve")
    gpu_file({78: 100})
    directory = Directory(Listing({CONTAINER: attribution.Container(CONTAINER, "sidecar", {})}))
    gpu = attribute(ServiceMatch("gaia-study", cmdline=r"study\.serve"), containers=directory, proc=tmp_path)
    (owner,) = gpu.processes
    assert (owner.service, owner.matched_by) == ("gaia-study", "cmdline")


def test_it_asks_docker_nothing_when_no_gpu_process_runs_in_a_container(processes, gpu_file):
    tree = processes(token())
    gpu_file({tree.pid: 100})
    directory = Directory(Listing({}, "must not be asked"))
    result = attribution.attribute(telemetry.sample(), [], containers=directory)
    assert directory.asked == [] and result.containers_reason == ""


def test_it_reuses_one_docker_listing_and_keeps_a_failure_as_long():
    now = [100.0]
    directory = ContainerDirectory("unix:///nonexistent/docker.sock", ttl_seconds=2.0, clock=lambda: now[0])
    first = directory.lookup({CONTAINER})
    now[0] += 1.0
    second = directory.lookup({CONTAINER})
    assert directory.list_calls == 1 and second is first
    assert "unix:///nonexistent/docker.sock could not list containers" in first.reason
    now[0] += 1.5
    directory.lookup({CONTAINER})
    assert directory.list_calls == 2


def test_it_rejects_an_invalid_command_line_pattern():
    with pytest.raises(ValueError, match="gaia-study: the cmdline pattern"):
        ServiceMatch("gaia-study", cmdline="serve(")


def test_it_matches_by_process_a_gpu_process_in_gaiaorchs_own_container(tmp_path, gpu_file):
    """gaiaorch and the services run in one container (a GPU box's job container): no Docker to ask."""
    fake_proc(tmp_path, 79, f"0::/docker/{CONTAINER}", command="python -m study.serve")
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "cgroup").write_text(f"0::/docker/{CONTAINER}\n")
    gpu_file({79: 100})
    directory = Directory(Listing({}, "Docker is not there"))
    gpu = attribute(ServiceMatch("gaia-study", cmdline=r"study\.serve"), containers=directory, proc=tmp_path)
    (owner,) = gpu.processes
    assert (owner.service, owner.matched_by, owner.unresolved) == ("gaia-study", "cmdline", "")
    assert gpu.available and directory.asked == []
