"""Who holds the GPU memory: each process NVML lists, attributed to a configured service or not.

A process belongs to a service
1. through its container: /proc/<pid>/cgroup names the container id (cgroup v1 `/docker/<id>`,
   v2 `/docker/<id>` or systemd `docker-<id>.scope`, containerd/CRI-O/podman `…-<id>.scope`); one
   Docker list call (cached briefly) maps the id to the container, and the container to the
   service by `container_name`, or by the compose project + service labels (as the containers
   app finds a service's container);
2. else by a process match, for services not run in containers: the pid in the service's pidfile,
   or its command line pattern (a regular expression searched in /proc/<pid>/cmdline). A matched
   process's descendants count for the service too: the nearest matching ancestor wins.
The rest is *unattributed* (pid, command line, MiB).

The same code runs for both telemetry backends: the fake backend's processes are real pids too.
gaiaorch must see the GPU processes' PIDs (`pid: host` in compose) for any of this to work.

`attribute()` never raises. Attribution of a GPU is *unavailable* (with the reason) when NVML's
process list does not account for the memory in use (a VM, another PID namespace), when a
process holding memory is in a container Docker could not be asked about, or when NVML names a
pid this PID namespace does not show; its figures are then not proof of who holds what.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gaiaorch.telemetry import UNLISTED_TOLERANCE_MIB, GpuSample, Telemetry

if TYPE_CHECKING:
    from gaiaorch.config import Config

logger = logging.getLogger(__name__)

COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"
COMMAND_LIMIT = 200  # characters of a command line kept in records and events
SENTENCE_COMMAND_LIMIT = 100  # of them, quoted in a sentence (a waiter's waiting_for, a refusal)
ANCESTRY_LIMIT = 64  # parent links followed before giving up (a loop or a very deep tree)
# A 64-hex container id as the last part of a cgroup path component: "/docker/<id>",
# "docker-<id>.scope", "cri-containerd-<id>.scope", "/kubepods/…/<id>".
CONTAINER_ID = re.compile(r"(?:^|[/-])([0-9a-f]{64})(?=\.scope|/|$)")
PROC = Path("/proc")


@dataclass(frozen=True)
class ServiceMatch:
    """How to recognise one configured service's processes."""

    name: str
    container_name: str = ""
    compose_project: str = ""
    compose_service: str = ""
    pidfile: str = ""
    cmdline: str = ""  # a regular expression, searched in the process's command line

    def __post_init__(self) -> None:
        if self.cmdline:
            try:
                re.compile(self.cmdline)
            except re.error as exc:
                problem = f"{self.name}: the cmdline pattern {self.cmdline!r} is invalid: {exc}"
                raise ValueError(problem) from None

    def owns_container(self, container: Container) -> bool:
        if self.container_name:
            return container.name == self.container_name
        return bool(self.compose_service) and (
            container.labels.get(COMPOSE_SERVICE) == self.compose_service
            and container.labels.get(COMPOSE_PROJECT) == self.compose_project
        )

    def matches_command(self, command: str) -> bool:
        return bool(self.cmdline) and re.search(self.cmdline, command) is not None


# --- what the attribution answers --------------------------------------------------------------


@dataclass(frozen=True)
class ProcessOwner:
    pid: int
    used_mib: int | None
    command: str  # truncated to COMMAND_LIMIT
    service: str | None = None  # the configured service it belongs to; None: not attributed
    matched_by: str = ""  # container | pidfile | cmdline
    container: str = ""  # the container's name (or short id when Docker did not say)
    unresolved: str = ""  # why it could not be told whose it is ("" when it could)

    @property
    def unattributed(self) -> bool:
        return self.service is None and not self.unresolved

    def describe(self) -> str:
        """9.1 GiB held by pid 4242 `python train.py` (the program without its directory), or
        9.1 GiB held by gaia-prime (pid 77)."""
        held = f"{(self.used_mib or 0) / 1024:.1f} GiB held by"
        if self.service is not None:
            return f"{held} {self.service} (pid {self.pid})"
        program, _, arguments = self.command.partition(" ")
        command = " ".join(part for part in (program.rsplit("/", 1)[-1], arguments) if part)
        if len(command) > SENTENCE_COMMAND_LIMIT:
            command = command[: SENTENCE_COMMAND_LIMIT - 1] + "…"
        return f"{held} pid {self.pid} `{command or '?'}`"

    def as_dict(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "used_mib": self.used_mib,
            "command": self.command,
            "service": self.service,
            "matched_by": self.matched_by,
            "container": self.container,
            "unresolved": self.unresolved,
        }


@dataclass(frozen=True)
class GpuAttribution:
    gpu: int
    available: bool
    reason: str
    processes: tuple[ProcessOwner, ...] = ()
    reserved_mib: int | None = None
    unlisted_mib: int = 0  # memory in use that no listed process accounts for

    def service_mib(self, name: str) -> int:
        return sum(p.used_mib or 0 for p in self.processes if p.service == name)

    def by_service(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for process in self.processes:
            if process.service is not None:
                totals[process.service] = totals.get(process.service, 0) + (process.used_mib or 0)
        return totals

    @property
    def unattributed(self) -> tuple[ProcessOwner, ...]:
        return tuple(process for process in self.processes if process.unattributed)

    @property
    def unattributed_mib(self) -> int:
        return sum(process.used_mib or 0 for process in self.unattributed)

    def holders(self, *, excluding: Sequence[str] = ()) -> list[ProcessOwner]:
        """Processes holding memory, largest first, leaving out those of the `excluding` services."""
        held = [p for p in self.processes if (p.used_mib or 0) > 0 and p.service not in excluding]
        return sorted(held, key=lambda process: -(process.used_mib or 0))

    def as_dict(self) -> dict[str, Any]:
        return {
            "gpu": self.gpu,
            "available": self.available,
            "reason": self.reason,
            "by_service_mib": self.by_service(),
            "unattributed_mib": self.unattributed_mib,
            "unlisted_mib": self.unlisted_mib,
            "reserved_mib": self.reserved_mib,
            "processes": [process.as_dict() for process in self.processes],
        }


@dataclass(frozen=True)
class Attribution:
    available: bool  # False: no telemetry at all (see reason)
    reason: str = ""
    gpus: tuple[GpuAttribution, ...] = ()
    containers_reason: str = ""  # why Docker could not be asked ("" when it answered or was not needed)
    problems: tuple[str, ...] = ()  # configuration that could not be used (an unreadable pidfile)

    def gpu(self, index: int) -> GpuAttribution | None:
        return next((gpu for gpu in self.gpus if gpu.gpu == index), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "available": self.available,
            "reason": self.reason,
            "containers_reason": self.containers_reason,
            "problems": list(self.problems),
            "gpus": [gpu.as_dict() for gpu in self.gpus],
        }


# --- Docker: running containers by id -----------------------------------------------------------


@dataclass(frozen=True)
class Container:
    id: str
    name: str
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Listing:
    containers: dict[str, Container]
    reason: str = ""  # why Docker could not be asked ("" when it answered)
    at: float = 0.0


class ContainerDirectory:
    """Running containers by id from one Docker list call, kept for `ttl_seconds`.

    A failure is kept as long, so a Docker that is down costs one timeout per ttl, not one per
    sample. An id missing from a listing older than `refresh_after_seconds` lists again once.
    """

    def __init__(
        self,
        docker_url: str,
        timeout_seconds: float = 2.0,
        ttl_seconds: float = 2.0,
        refresh_after_seconds: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.docker_url = docker_url
        self.timeout_seconds = timeout_seconds
        self.ttl_seconds = ttl_seconds
        self.refresh_after_seconds = refresh_after_seconds
        self.clock = clock
        self.list_calls = 0
        self._listing: Listing | None = None
        self._lock = threading.Lock()  # why: web threads sampling at once must share one list call

    def lookup(self, container_ids: set[str]) -> Listing:
        with self._lock:
            now = self.clock()
            listing = self._listing
            stale = listing is None or now - listing.at >= self.ttl_seconds
            missing = listing is not None and not container_ids <= listing.containers.keys()
            if stale or (missing and not listing.reason and now - listing.at >= self.refresh_after_seconds):  # type: ignore[union-attr]  # missing implies a listing
                self._listing = listing = self._list(now)
            assert listing is not None  # stale when there was none
            return listing

    def _list(self, now: float) -> Listing:
        self.list_calls += 1
        try:
            import docker

            client = docker.APIClient(base_url=self.docker_url, version="1.41", timeout=self.timeout_seconds)  # type: ignore[arg-type]  # a float works; the stubs say int
            try:
                summaries = client.containers()
            finally:
                client.close()
        except Exception as exc:  # no SDK, socket gone, daemon down, timeout: all mean "cannot ask"
            return Listing({}, f"Docker at {self.docker_url} could not list containers: {exc}", now)
        containers = {}
        for summary in summaries:
            names = summary.get("Names") or ["/"]
            container = Container(summary["Id"], names[0].lstrip("/"), dict(summary.get("Labels") or {}))
            containers[container.id] = container
        return Listing(containers, "", now)


_default_directory: ContainerDirectory | None = None
_default_lock = threading.Lock()  # why: two threads must not each build (and later use) their own cache


def default_directory(ttl_seconds: float = 2.0) -> ContainerDirectory:
    """The process-wide directory for settings.DOCKER_URL, keeping a listing `ttl_seconds`."""
    global _default_directory
    from django.conf import settings

    with _default_lock:
        directory = _default_directory
        if directory is None or (directory.docker_url, directory.ttl_seconds) != (
            settings.DOCKER_URL,
            ttl_seconds,
        ):
            _default_directory = directory = ContainerDirectory(settings.DOCKER_URL, ttl_seconds=ttl_seconds)
        return directory


# --- /proc --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    parent: int
    command: str
    container_ids: tuple[str, ...]  # innermost last
    error: str = ""  # why its /proc entry could not be read ("" when it could)


def container_ids(cgroup: str) -> tuple[str, ...]:
    """The container ids named in a /proc/<pid>/cgroup text, outermost first, each once."""
    found: list[str] = []
    for line in cgroup.splitlines():
        path = line.split(":", 2)[-1]
        for container_id in CONTAINER_ID.findall(path):
            if container_id not in found:
                found.append(container_id)
    return tuple(found)


class ProcTable:
    """/proc as one attribution pass reads it: each process read once."""

    def __init__(self, root: Path = PROC):
        self.root = root
        self._seen: dict[int, ProcessInfo | None] = {}

    def get(self, pid: int) -> ProcessInfo | None:
        if pid not in self._seen:
            self._seen[pid] = self._read(pid)
        return self._seen[pid]

    def _read(self, pid: int) -> ProcessInfo | None:
        base = self.root / str(pid)
        try:
            stat = (base / "stat").read_text()
            raw = (base / "cmdline").read_bytes()
            cgroup = (base / "cgroup").read_text()
        except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
            return None
        except OSError as exc:  # seen, but not readable (a hardened /proc)
            return ProcessInfo(pid, 0, "", (), error=f"its /proc entry is unreadable: {exc.strerror or exc}")
        # The command name in stat is parenthesised and may itself hold spaces and parentheses.
        name, _, rest = stat.rpartition(")")
        fields = rest.split()
        parent = int(fields[1]) if len(fields) > 1 else 0
        command = raw.replace(b"\0", b" ").decode(errors="replace").strip()
        if not command:  # a kernel thread or a zombie
            command = f"[{name.partition('(')[2]}]"
        return ProcessInfo(pid, parent, command, container_ids(cgroup))

    def own_containers(self) -> frozenset[str]:
        """The containers gaiaorch itself runs in: a process sharing them is not in another one."""
        try:
            return frozenset(container_ids((self.root / "self" / "cgroup").read_text()))
        except OSError:
            return frozenset()

    def ancestry(self, pid: int) -> list[ProcessInfo]:
        """The process, then its parent, …, up to (not including) pid 1."""
        chain: list[ProcessInfo] = []
        info = self.get(pid)
        while info is not None and not info.error and info.pid > 1 and len(chain) < ANCESTRY_LIMIT:
            chain.append(info)
            info = self.get(info.parent) if info.parent not in (0, info.pid) else None
        return chain


def read_pidfile(path: str) -> tuple[int | None, str]:
    """The pid in a pidfile, or None and why not."""
    try:
        text = Path(path).read_text().strip()
    except OSError as exc:
        return None, f"pidfile {path} is unreadable: {exc.strerror or exc}"
    if not text.isdigit():
        return None, f"pidfile {path} holds no pid ({text[:40]!r})"
    return int(text), ""


# --- attributing ---------------------------------------------------------------------------------


def service_matches(config: Config) -> list[ServiceMatch]:
    """How each configured service's processes are recognised: its container (the containers
    app's rule: container_name, else the compose project and service labels) and its process match."""
    matches = []
    for service in config.services.values():
        process = service.process
        matches.append(
            ServiceMatch(
                service.name,
                container_name=service.container_name,
                compose_project=config.docker.compose_project if service.compose_service else "",
                compose_service=service.compose_service,
                pidfile=process.pidfile if process else "",
                cmdline=process.cmdline if process else "",
            )
        )
    return matches


def current(sample: Telemetry | None = None) -> Attribution:
    """Attribute a telemetry sample (a new one by default) to the services of the current
    configuration, with its tolerance and container-listing cache. Never raises."""
    from gaiaorch import config, telemetry

    if sample is None:
        sample = telemetry.sample()
    try:
        settings = config.current()
    except config.ConfigError as exc:
        reason = f"the configuration has problems: {exc}"
        return Attribution(
            sample.available,
            sample.reason,
            tuple(GpuAttribution(g.index, False, reason) for g in sample.gpus),
        )
    return attribute(
        sample,
        service_matches(settings),
        containers=default_directory(settings.gpu.attribution_cache_seconds),
        tolerance_mib=settings.gpu.unlisted_tolerance_mib,
    )


def attribute(
    sample: Telemetry,
    services: Sequence[ServiceMatch],
    *,
    containers: ContainerDirectory | None = None,
    proc: Path = PROC,
    tolerance_mib: int = UNLISTED_TOLERANCE_MIB,
) -> Attribution:
    """Attribute every GPU process of a telemetry sample. Never raises."""
    if not sample.available:
        return Attribution(False, sample.reason)
    try:
        return _Pass(services, containers, proc, tolerance_mib).run(sample)
    except Exception as exc:  # a bug here must not take a handoff or a status page down
        logger.exception("GPU memory attribution failed")
        reason = f"attribution failed: {exc!r}"
        return Attribution(True, gpus=tuple(GpuAttribution(gpu.index, False, reason) for gpu in sample.gpus))


class _Pass:
    """One attribution of one sample: /proc, pidfiles and Docker read at most once each."""

    def __init__(self, services, containers, proc, tolerance_mib):
        self.services = list(services)
        self.containers = containers
        self.table = ProcTable(proc)
        self.tolerance_mib = tolerance_mib
        self.problems: list[str] = []
        self.pidfile_pids = self._pidfile_pids()
        self.own_containers = self.table.own_containers()
        self.listing: Listing | None = None

    def _pidfile_pids(self) -> dict[int, str]:
        pids: dict[int, str] = {}
        for service in self.services:
            if service.pidfile:
                pid, problem = read_pidfile(service.pidfile)
                if pid is None:
                    self.problems.append(f"{service.name}: {problem}")
                else:
                    pids.setdefault(pid, service.name)
        return pids

    def run(self, sample: Telemetry) -> Attribution:
        wanted = {
            container_id
            for gpu in sample.gpus
            for process in gpu.processes
            if (info := self.table.get(process.pid)) is not None
            for container_id in self._foreign(info)
        }
        if wanted:
            directory = self.containers or default_directory()
            self.listing = directory.lookup(wanted)
        gpus = tuple(self._gpu(gpu) for gpu in sample.gpus)
        return Attribution(
            True,
            gpus=gpus,
            containers_reason=self.listing.reason if self.listing else "",
            problems=tuple(self.problems),
        )

    def _gpu(self, gpu: GpuSample) -> GpuAttribution:
        owners = tuple(self._owner(process.pid, process.used_mib) for process in gpu.processes)
        available, reason = True, ""
        visibility = gpu.visibility(self.tolerance_mib)
        unresolved = [owner for owner in owners if owner.unresolved]
        if not visibility.visible:
            available, reason = False, visibility.reason
        elif unresolved:
            first = unresolved[0]
            available = False
            reason = f"pid {first.pid} ({first.used_mib} MiB) on GPU {gpu.index}: {first.unresolved}"
        return GpuAttribution(gpu.index, available, reason, owners, gpu.reserved_mib, gpu.unlisted_mib)

    def _owner(self, pid: int, used_mib: int | None) -> ProcessOwner:
        info = self.table.get(pid)
        if info is None:
            return ProcessOwner(
                pid,
                used_mib,
                "",
                unresolved="this pid is not visible here: NVML and gaiaorch see "
                "different PID namespaces (run gaiaorch with pid: host), or the process just ended",
            )
        command = info.command[:COMMAND_LIMIT]
        if info.error:
            return ProcessOwner(pid, used_mib, command, unresolved=info.error)
        if self._foreign(info):
            found = self._by_container(info)
            if found is not None:
                return ProcessOwner(pid, used_mib, command, **found)
        for ancestor in self.table.ancestry(pid):
            service = self.pidfile_pids.get(ancestor.pid)
            if service is not None:
                return ProcessOwner(pid, used_mib, command, service, "pidfile")
            service = next((s.name for s in self.services if s.matches_command(ancestor.command)), None)
            if service is not None:
                return ProcessOwner(pid, used_mib, command, service, "cmdline")
        return ProcessOwner(pid, used_mib, command, container=self._container_label(info))

    def _foreign(self, info: ProcessInfo) -> tuple[str, ...]:
        """The process's containers but those gaiaorch runs in itself (one container for both:
        a box or a CI job run in a container, where the process match decides)."""
        return tuple(
            container_id for container_id in info.container_ids if container_id not in self.own_containers
        )

    def _by_container(self, info: ProcessInfo) -> dict[str, Any] | None:
        """Owner fields from the process's container, or None to fall back to process matching."""
        listing = self.listing
        if listing is None or listing.reason:
            why = listing.reason if listing else "Docker was not asked"
            return {"container": self._foreign(info)[-1][:12], "unresolved": f"it runs in a container: {why}"}
        for container_id in reversed(self._foreign(info)):
            container = listing.containers.get(container_id)
            if container is None:
                continue
            service = next((s.name for s in self.services if s.owns_container(container)), None)
            if service is not None:
                return {"service": service, "matched_by": "container", "container": container.name}
            return None  # a container of no service: its processes may still match by pidfile/cmdline
        return None  # a container this Docker does not know (another engine): process matching decides

    def _container_label(self, info: ProcessInfo) -> str:
        if not self._foreign(info):
            return ""
        containers = self.listing.containers if self.listing else {}
        for container_id in reversed(self._foreign(info)):
            if container_id in containers:
                return containers[container_id].name
        return self._foreign(info)[-1][:12]
