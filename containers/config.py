"""The `services:`, `stacks:` and `docker:` sections of the configuration, parsed into typed objects.

Only services named here can be touched. Parsing is strict: an unknown stack, a dependency on a
service that does not exist (or lives in the other stack), a dependency cycle, or the
orchestrator's own container listed as a service stops start-up with ImproperlyConfigured.

`current()` parses settings.GAIAORCH (the YAML file, or whatever a test put there);
`load(mapping)` and `load_file(path)` parse any other document.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from gaiaorch.config import load_yaml

STACKS = ("live", "candidate")
DEFAULT_STOP_TIMEOUT_SECONDS = 30
DEFAULT_HEALTH_TIMEOUT_SECONDS = 120


@dataclass(frozen=True)
class ContainerSpec:
    """How to create a service's container when it does not exist yet."""

    image: str
    command: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    ports: Mapping[str, str] = field(default_factory=dict)  # "8080/tcp" -> "127.0.0.1:6415"
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Service:
    name: str
    stack: str
    role: str
    compose_service: str = ""
    container_name: str = ""
    network_alias: str = ""
    port: int | None = None
    health_url: str = ""
    gpu: bool = False
    vram_mib: tuple[int, ...] = ()
    depends_on: tuple[str, ...] = ()
    stop_timeout_seconds: int = DEFAULT_STOP_TIMEOUT_SECONDS
    health_timeout_seconds: int = DEFAULT_HEALTH_TIMEOUT_SECONDS
    spec: ContainerSpec | None = None

    @property
    def vram_need_mib(self) -> int:
        return sum(self.vram_mib)


@dataclass(frozen=True)
class Stack:
    name: str
    gpu_requester: str
    gpu: int = 0


@dataclass(frozen=True)
class ContainersConfig:
    services: Mapping[str, Service]
    stacks: Mapping[str, Stack]
    own_container: str = ""
    compose_project: str = ""
    network: str = ""
    reconcile_interval_seconds: float = 5.0

    def service(self, name: str) -> Service | None:
        return self.services.get(name)

    def stack_services(self, stack: str) -> list[Service]:
        return [service for service in self.services.values() if service.stack == stack]

    def twin(self, service: Service) -> Service | None:
        """The service of the other stack with the same role (live <-> candidate)."""
        return next(
            (s for s in self.services.values() if s.role == service.role and s.stack != service.stack),
            None,
        )

    def start_order(self, targets: Iterable[Service]) -> list[Service]:
        """Targets plus everything they depend on, dependencies first."""
        ordered: list[Service] = []

        def visit(service: Service) -> None:
            if service in ordered:
                return
            for dependency in service.depends_on:
                visit(self.services[dependency])
            ordered.append(service)

        for service in targets:
            visit(service)
        return ordered

    def stop_order(self, targets: Iterable[Service]) -> list[Service]:
        """Targets plus everything that depends on them, dependents first."""
        wanted = {service.name for service in targets}
        changed = True
        while changed:
            dependents = {s.name for s in self.services.values() if wanted & set(s.depends_on)}
            changed = not dependents <= wanted
            wanted |= dependents
        everything = self.start_order(self.services.values())
        return [service for service in reversed(everything) if service.name in wanted]


def _fail(where: str, message: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(f"{where}: {message}")


def _mapping(where: str, raw: Any) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise _fail(where, f"must be a mapping, got {type(raw).__name__}")
    return raw


def _text(where: str, raw: Any, default: str = "") -> str:
    if raw is None:
        return default
    if not isinstance(raw, str | int) or isinstance(raw, bool) or not str(raw).strip():
        raise _fail(where, f"must be a non-empty string, got {raw!r}")
    return str(raw).strip()


def _integer(where: str, raw: Any, default: int | None, minimum: int = 0) -> int | None:
    if raw is None:
        return default
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < minimum:
        raise _fail(where, f"must be an integer >= {minimum}, got {raw!r}")
    return raw


def _words(where: str, raw: Any) -> tuple[str, ...] | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        return tuple(raw.split())
    if not isinstance(raw, list) or not all(isinstance(word, str | int) for word in raw):
        raise _fail(where, f"must be a list of strings, got {raw!r}")
    return tuple(str(word) for word in raw)


def _vram(where: str, raw: Any) -> tuple[int, ...]:
    """A number, or a list of numbers when the service loads several models."""
    if raw is None:
        return ()
    figures = raw if isinstance(raw, list) else [raw]
    return tuple(_integer(where, figure, None, minimum=1) for figure in figures)


def _strings(where: str, raw: Any) -> dict[str, str]:
    return {str(key): str(value) for key, value in _mapping(where, raw).items()}


def _ports(where: str, raw: Any) -> dict[str, str]:
    """{"8080/tcp": "127.0.0.1:6415"}; a bare container port gets /tcp."""
    ports = {}
    for container_port, host in _mapping(where, raw).items():
        key = str(container_port) if "/" in str(container_port) else f"{container_port}/tcp"
        ports[key] = _text(f"{where}.{container_port}", host)
    return ports


def _spec(where: str, raw: Any) -> ContainerSpec | None:
    if raw is None:
        return None
    data = _mapping(where, raw)
    return ContainerSpec(
        image=_text(f"{where}.image", data.get("image")),
        command=_words(f"{where}.command", data.get("command")),
        entrypoint=_words(f"{where}.entrypoint", data.get("entrypoint")),
        environment=_strings(f"{where}.environment", data.get("environment")),
        ports=_ports(f"{where}.ports", data.get("ports")),
        labels=_strings(f"{where}.labels", data.get("labels")),
    )


def _service(name: str, raw: Any) -> Service:
    where = f"services.{name}"
    data = _mapping(where, raw)
    stack = _text(f"{where}.stack", data.get("stack"))
    if stack not in STACKS:
        raise _fail(f"{where}.stack", f"must be one of {list(STACKS)}, got {stack!r}")
    compose_service = _text(f"{where}.compose_service", data.get("compose_service"))
    container_name = _text(f"{where}.container_name", data.get("container_name"))
    if not compose_service and not container_name:
        raise _fail(where, "needs compose_service or container_name to find its container")
    alias = _text(f"{where}.network_alias", data.get("network_alias"), compose_service or name)
    if alias == container_name:
        raise _fail(f"{where}.network_alias", "must differ from container_name so a swap can move it")
    depends_on = _words(f"{where}.depends_on", data.get("depends_on")) or ()
    return Service(
        name=name,
        stack=stack,
        role=_text(f"{where}.role", data.get("role"), name),
        compose_service=compose_service,
        container_name=container_name,
        network_alias=alias,
        port=_integer(f"{where}.port", data.get("port"), None, minimum=1),
        health_url=_text(f"{where}.health_url", data.get("health_url")),
        gpu=bool(data.get("gpu", False)),
        vram_mib=_vram(f"{where}.vram_mib", data.get("vram_mib")),
        depends_on=depends_on,
        stop_timeout_seconds=_integer(
            f"{where}.stop_timeout_seconds", data.get("stop_timeout_seconds"), DEFAULT_STOP_TIMEOUT_SECONDS
        ),
        health_timeout_seconds=_integer(
            f"{where}.health_timeout_seconds",
            data.get("health_timeout_seconds"),
            DEFAULT_HEALTH_TIMEOUT_SECONDS,
            minimum=1,
        ),
        spec=_spec(f"{where}.container", data.get("container")),
    )


def _check_aliases(services: Mapping[str, Service]) -> None:
    owners: dict[str, str] = {}
    for service in services.values():
        other = owners.setdefault(service.network_alias, service.name)
        if other != service.name:
            raise _fail(
                f"services.{service.name}.network_alias",
                f"{service.network_alias!r} is already the network name of {other}",
            )


def _check_dependencies(services: Mapping[str, Service]) -> None:
    for service in services.values():
        for dependency in service.depends_on:
            other = services.get(dependency)
            if other is None:
                raise _fail(f"services.{service.name}.depends_on", f"names unknown service {dependency!r}")
            if other.stack != service.stack:
                raise _fail(
                    f"services.{service.name}.depends_on",
                    f"{dependency!r} is in the {other.stack} stack, not {service.stack}",
                )
    _check_cycles(services)


def _check_cycles(services: Mapping[str, Service]) -> None:
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in path:
            cycle = " -> ".join((*path[path.index(name) :], name))
            raise _fail("services", f"dependency cycle {cycle}")
        if name in done:
            return
        for dependency in services[name].depends_on:
            visit(dependency, (*path, name))
        done.add(name)

    for name in services:
        visit(name, ())


def _stacks(raw: Any) -> dict[str, Stack]:
    data = _mapping("stacks", raw)
    unknown = set(data) - set(STACKS)
    if unknown:
        raise _fail("stacks", f"unknown stack(s) {sorted(unknown)}; stacks are {list(STACKS)}")
    stacks = {}
    for name in STACKS:
        entry = _mapping(f"stacks.{name}", data.get(name))
        requester = _text(f"stacks.{name}.gpu_requester", entry.get("gpu_requester"), f"gaia-{name}")
        stacks[name] = Stack(name, requester, _integer(f"stacks.{name}.gpu", entry.get("gpu"), 0))
    return stacks


def load(data: Mapping[str, Any]) -> ContainersConfig:
    """Parse a whole configuration document (the shape of config/orchestrator.yaml)."""
    services = {
        str(name): _service(str(name), raw)
        for name, raw in _mapping("services", data.get("services")).items()
    }
    _check_dependencies(services)
    _check_aliases(services)
    docker = _mapping("docker", data.get("docker"))
    own = _text(
        "orchestrator.own_container", _mapping("orchestrator", data.get("orchestrator")).get("own_container")
    )
    for service in services.values():
        if own and service.container_name == own:
            raise _fail(f"services.{service.name}", f"is the orchestrator's own container {own!r}")
    interval = docker.get("reconcile_interval_seconds", 5)
    if isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0:
        raise _fail("docker.reconcile_interval_seconds", f"must be a positive number, got {interval!r}")
    return ContainersConfig(
        services=services,
        stacks=_stacks(data.get("stacks")),
        own_container=own,
        compose_project=_text("docker.compose_project", docker.get("compose_project")),
        network=_text("docker.network", docker.get("network")),
        reconcile_interval_seconds=float(interval),
    )


def load_file(path: Path) -> ContainersConfig:
    return load(load_yaml(Path(path)))


_parsed: tuple[object, ContainersConfig] | None = None


def current() -> ContainersConfig:
    """The configuration in settings.GAIAORCH, parsed once per document object."""
    global _parsed
    document = settings.GAIAORCH
    # Keyed by identity: a test that overrides settings.GAIAORCH gets its own parse.
    if _parsed is None or _parsed[0] is not document:
        _parsed = (document, load(document))
    return _parsed[1]
