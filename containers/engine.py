"""The Docker Engine, as the rest of the app needs it: find, observe, stop, start, (re)create, route.

Everything here talks to Docker and to nothing else; it never writes the database. Two kinds of
failure leave this module:
- DockerUnavailable (503): the engine did not answer (socket gone, timeout, daemon down).
- DockerRefused: the engine answered with an error (e.g. no NVIDIA runtime for a device request).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import datetime
from string import hexdigits
from typing import Any, cast

import docker
import requests
from django.conf import settings
from docker.errors import APIError, DockerException
from docker.errors import NotFound as DockerNotFound

from gaiaorch.config import Config, ContainerSpec, Service
from gaiaorch.errors import Forbidden, Unavailable

API_VERSION = "1.41"  # Docker 20.10; DeviceRequests need >= 1.40
COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"
SERVICE_LABEL = "org.gaiaorch.service"
NVIDIA_DRIVER = "nvidia"


class DockerUnavailable(Unavailable):
    code = "docker_unavailable"


class DockerRefused(Exception):
    """The engine answered but would not do it."""


class ContainerGone(DockerRefused):
    """The container does not exist (any more)."""


def _explain(exc: Exception) -> str:
    if isinstance(exc, APIError):
        return exc.explanation or str(exc)
    return str(exc) or type(exc).__name__


class Engine:
    """A Docker client for one unit of work; every call translates Docker's failures."""

    def __init__(self, timeout: float | None = None):
        self.timeout = timeout or settings.DOCKER_TIMEOUT_SECONDS
        try:
            self.api = docker.APIClient(
                base_url=settings.DOCKER_URL,
                version=API_VERSION,
                timeout=self.timeout,  # type: ignore[arg-type]  # a float works; the stubs say int
            )
        except DockerException as exc:
            raise DockerUnavailable(f"Docker at {settings.DOCKER_URL} is unusable: {exc}") from None

    def call(self, what: str, func, *args, **kwargs):
        try:
            return func(*args, **kwargs)
        except DockerNotFound as exc:
            raise ContainerGone(f"Docker could not {what}: {_explain(exc)}") from None
        except APIError as exc:
            if exc.response is not None and exc.response.status_code >= 500 and not exc.explanation:
                raise DockerUnavailable(f"Docker failed to {what}: {exc}") from None
            raise DockerRefused(f"Docker refused to {what}: {_explain(exc)}") from None
        except (requests.exceptions.RequestException, DockerException, OSError) as exc:
            raise DockerUnavailable(
                f"Docker at {settings.DOCKER_URL} is unreachable ({what}): {_explain(exc)}"
            ) from None

    def close(self) -> None:
        self.api.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- finding and observing -------------------------------------------------------------

    def ping(self) -> None:
        self.call("answer a ping", self.api.ping)

    def summaries(self) -> list[dict[str, Any]]:
        return self.call("list containers", self.api.containers, all=True)

    def inspect(self, container_id: str) -> dict[str, Any] | None:
        try:
            return self.call(f"inspect {container_id}", self.api.inspect_container, container_id)
        except ContainerGone:
            return None

    def inspect_made(self, container_id: str, name: str) -> dict[str, Any]:
        """The inspected container just created or started; one that vanished since is refused."""
        attrs = self.inspect(container_id)
        if attrs is None:
            raise ContainerGone(f"{name} vanished right after Docker made or started it")
        return attrs

    def find(self, config: Config, service: Service) -> dict[str, Any] | None:
        """The inspected container of a service, or None when it does not exist."""
        for summary in self.summaries():
            if matches(config, service, summary_name(summary), summary.get("Labels") or {}):
                return self.inspect(summary["Id"])
        return None

    def managed(self, config: Config) -> dict[str, dict[str, Any]]:
        """Service name -> inspected container, for every configured service that has one."""
        found = {}
        for summary in self.summaries():
            service = service_of(config, summary_name(summary), summary.get("Labels") or {})
            if service and service.name not in found:
                attrs = self.inspect(summary["Id"])
                if attrs:
                    found[service.name] = attrs
        return found

    def events(self, since: datetime, until: datetime) -> Iterator[dict[str, Any]]:
        stream = self.call(
            "stream events",
            self.api.events,
            since=since,
            until=until,
            decode=True,
            filters={"type": "container"},
        )
        try:
            yield from stream
        except (requests.exceptions.RequestException, OSError, ValueError) as exc:
            raise DockerUnavailable(f"Docker's event stream broke: {exc}") from None

    # --- acting ------------------------------------------------------------------------------

    def stop(self, config: Config, attrs: dict[str, Any], timeout: int) -> None:
        refuse_own(config, attrs)
        # docker-py lets the HTTP call outlive the grace period (SIGTERM, wait, SIGKILL) by itself.
        self.call(f"stop {container_name(attrs)}", self.api.stop, attrs["Id"], timeout=timeout)

    def kill(self, config: Config, attrs: dict[str, Any]) -> None:
        refuse_own(config, attrs)
        self.call(f"kill {container_name(attrs)}", self.api.kill, attrs["Id"])

    def start(self, attrs: dict[str, Any]) -> None:
        self.call(f"start {container_name(attrs)}", self.api.start, attrs["Id"])

    def remove(self, config: Config, attrs: dict[str, Any]) -> None:
        refuse_own(config, attrs)
        self.call(f"remove {container_name(attrs)}", self.api.remove_container, attrs["Id"], force=True)

    def create(self, config: Config, service: Service, device_requests: list[dict]) -> dict:
        """A container for a service that has none yet, from its configured spec."""
        spec = cast(ContainerSpec, service.spec)  # the runner refuses a service without one
        name = service.container_name or f"{config.docker.compose_project or 'gaia'}-{service.name}"
        labels = {**spec.labels, SERVICE_LABEL: service.name}
        if service.compose_service and config.docker.compose_project:
            labels |= {
                COMPOSE_PROJECT: config.docker.compose_project,
                COMPOSE_SERVICE: service.compose_service,
            }
        host_config = self.api.create_host_config(
            port_bindings={port: _binding(host) for port, host in spec.ports.items()},
            network_mode=config.docker.network or None,
            device_requests=device_requests or None,  # type: ignore[arg-type]  # dicts work; the stubs say DeviceRequest
        )
        created = self.call(
            f"create {name}",
            self.api.create_container,
            spec.image,
            command=list(spec.command) if spec.command is not None else None,
            entrypoint=list(spec.entrypoint) if spec.entrypoint is not None else None,
            environment=dict(spec.environment),
            labels=labels,
            name=name,
            ports=[tuple(port.split("/")) for port in spec.ports],
            host_config=host_config,
            networking_config=self._endpoints(config.docker.network, [service.network_alias]),
            stop_timeout=service.stop_timeout_seconds,
        )
        return self.inspect_made(created["Id"], name)

    def recreate(self, config: Config, attrs: dict[str, Any], device_requests: list[dict]) -> dict:
        """Replace a container by one with its own configuration plus the given device requests."""
        refuse_own(config, attrs)
        body = dict(attrs["Config"])
        host_config = {**attrs["HostConfig"], "DeviceRequests": device_requests or None}
        networks = attrs["NetworkSettings"]["Networks"] or {}
        primary = host_config.get("NetworkMode", "")
        name = container_name(attrs)
        self.remove(config, attrs)
        created = self.call(
            f"recreate {name}",
            self.api.create_container,
            body["Image"],
            command=body.get("Cmd"),
            entrypoint=body.get("Entrypoint"),
            environment=body.get("Env"),
            labels=body.get("Labels"),
            user=body.get("User") or None,
            working_dir=body.get("WorkingDir") or None,
            name=name,
            ports=[tuple(port.split("/")) for port in body.get("ExposedPorts") or {}],
            host_config=host_config,
            healthcheck=body.get("Healthcheck"),
            stop_signal=body.get("StopSignal"),
            stop_timeout=body.get("StopTimeout"),
            networking_config=self._endpoints(primary, own_aliases(attrs, primary))
            if primary in networks
            else None,
        )
        for network in networks:
            if network != primary:
                self.connect(created["Id"], network, own_aliases(attrs, network))
        return self.inspect_made(created["Id"], name)

    def _endpoints(self, network: str, aliases: list[str]) -> dict | None:
        if not network or network in ("bridge", "host", "none", "default"):
            return None
        return self.api.create_networking_config({network: self.api.create_endpoint_config(aliases=aliases)})  # type: ignore[arg-type]  # the stubs are wrong: it takes the endpoints by network

    def connect(self, container_id: str, network: str, aliases: list[str]) -> None:
        self.call(
            f"connect {container_id[:12]} to {network}",
            self.api.connect_container_to_network,
            container_id,
            network,
            aliases=aliases or None,
        )

    def disconnect(self, container_id: str, network: str) -> None:
        self.call(
            f"disconnect {container_id[:12]} from {network}",
            self.api.disconnect_container_from_network,
            container_id,
            network,
        )

    def set_aliases(self, attrs: dict[str, Any], network: str, aliases: list[str]) -> None:
        """Reconnect a container to a network under exactly these aliases (Docker cannot edit them)."""
        if network in (attrs["NetworkSettings"]["Networks"] or {}):
            self.disconnect(attrs["Id"], network)
        self.connect(attrs["Id"], network, aliases)


# --- pure helpers: reading inspect documents ------------------------------------------------


def _binding(host: str) -> tuple[str, int] | tuple[str]:
    address, _, port = host.rpartition(":")
    return (address, int(port)) if port else (address or "127.0.0.1",)


def summary_name(summary: dict[str, Any]) -> str:
    names = summary.get("Names") or ["/"]
    return names[0].lstrip("/")


def container_name(attrs: dict[str, Any]) -> str:
    return attrs.get("Name", "").lstrip("/")


def matches(config: Config, service: Service, name: str, labels: dict[str, str]) -> bool:
    if service.container_name:
        return name == service.container_name
    return (
        labels.get(COMPOSE_SERVICE) == service.compose_service
        and labels.get(COMPOSE_PROJECT) == config.docker.compose_project
    )


def service_of(config: Config, name: str, labels: dict[str, str]) -> Service | None:
    return next((s for s in config.containers() if matches(config, s, name, labels)), None)


def is_own(config: Config, attrs: dict[str, Any]) -> bool:
    """The orchestrator's container: its configured name, or the container we run inside."""
    hostname = socket.gethostname()
    looks_like_id = len(hostname) == 12 and all(char in hexdigits for char in hostname)
    inside = looks_like_id and attrs.get("Id", "").startswith(hostname)
    return inside or bool(
        config.orchestrator.own_container and container_name(attrs) == config.orchestrator.own_container
    )


def refuse_own(config: Config, attrs: dict[str, Any]) -> None:
    if is_own(config, attrs):
        raise Forbidden(
            f"{container_name(attrs)} is the orchestrator's own container; it is never stopped, "
            "removed or recreated by the orchestrator.",
            code="own_container",
        )


def own_aliases(attrs: dict[str, Any], network: str) -> list[str]:
    """The aliases a container has on a network, minus the short id Docker adds by itself."""
    endpoint = (attrs["NetworkSettings"]["Networks"] or {}).get(network) or {}
    return [alias for alias in endpoint.get("Aliases") or [] if not attrs["Id"].startswith(alias)]


def gpu_device_requests(gpu: int) -> list[dict[str, Any]]:
    return [{"Driver": NVIDIA_DRIVER, "Count": 0, "DeviceIDs": [str(gpu)], "Capabilities": [["gpu"]]}]


def device_requests(attrs: dict[str, Any]) -> list[dict[str, Any]]:
    return list(attrs["HostConfig"].get("DeviceRequests") or [])


def wants_recreate(attrs: dict[str, Any], wanted: list[dict[str, Any]]) -> bool:
    def key(requests_: list[dict[str, Any]]) -> list[tuple]:
        return sorted((r.get("Driver", ""), tuple(r.get("DeviceIDs") or ())) for r in requests_)

    return key(device_requests(attrs)) != key(wanted)


def observe(attrs: dict[str, Any] | None) -> dict[str, Any]:
    """The reality row's fields for an inspected container (None: it does not exist)."""
    if attrs is None:
        return {"container_id": "", "name": "", "image": "", "state": "absent", "health": "",
                "started_at": None, "device_requests": []}  # fmt: skip
    state = attrs["State"]
    started = state.get("StartedAt") or ""
    return {
        "container_id": attrs["Id"],
        "name": container_name(attrs),
        "image": attrs["Config"].get("Image", ""),
        "state": state.get("Status", "unknown"),
        "health": (state.get("Health") or {}).get("Status", ""),
        "started_at": started if started and not started.startswith("0001-") else None,
        "device_requests": device_requests(attrs),
    }
