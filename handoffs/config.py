"""The handoff view of config/orchestrator.yaml: handoff types, service strategies, cleanup limits.

Read from settings.GAIAORCH on every call (a small dict walk), so tests and operators can change
the configuration without restarting anything that caches it. Nonsense raises
ImproperlyConfigured naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from gaiaorch.config import Source, choice_parser, int_parser, parse_bool

HTTP_METHODS = ("GET", "POST", "PUT", "DELETE")
PHASE_DEADLINES = (
    "releasing_gpu",
    "waiting_cuda_cleanup",
    "transferring_ownership",
    "signaling_recipient",
    "rolling_back",
)
STACK_STRATEGY = "containers"


@dataclass(frozen=True)
class HttpCall:
    method: str
    url: str


@dataclass(frozen=True)
class Strategy:
    """How to make one service give up, take back, or start using the GPU."""

    http: HttpCall | None = None
    container: str = ""  # "stop" | "start" | ""

    def __bool__(self) -> bool:
        return bool(self.http or self.container)


@dataclass(frozen=True)
class Service:
    name: str
    stack: str
    health_url: str
    gpu: bool
    vram_mib: int
    depends_on: tuple[str, ...]
    release: Strategy
    reclaim: Strategy
    ready: Strategy


@dataclass(frozen=True)
class HandoffType:
    name: str
    source: str
    destination: str
    # "services": HTTP/container strategies of the services; "containers": whole-stack stop/start.
    release: str = "services"
    signal: str = "services"


@dataclass(frozen=True)
class HandoffSettings:
    types: dict[str, HandoffType]
    services: dict[str, Service]
    phase_timeouts: dict[str, int]
    http_timeout_seconds: float
    stale_after_seconds: int
    recovery_interval_seconds: int
    signal_retry_max_seconds: float
    on_recipient_unacknowledged: str
    accept_container_stopped_as_proof: bool
    poll_ms: int
    residual_mib: int
    baseline_mib: int | None
    baseline_interval_seconds: int
    stacks: dict[str, str] = field(default_factory=dict)

    def service(self, name: str) -> Service:
        try:
            return self.services[name]
        except KeyError:
            raise ImproperlyConfigured(f"services.{name} is not configured") from None

    def gpu_chain(self, name: str) -> list[Service]:
        """The service and the GPU-using services it depends on, the service itself first.

        gaia-core holds the lease while gaia-prime holds the VRAM: giving up the GPU means asking
        gaia-core to stop using Prime, then Prime to free its memory.
        """
        root = self.service(name)
        deps = [self.service(dep) for dep in root.depends_on if dep in self.services]
        return [root, *(dep for dep in deps if dep.gpu)]

    def stops_container(self, kind: HandoffType) -> bool:
        """Whether releasing stops a container: the only proof of cleanup accepted without telemetry."""
        if kind.release == STACK_STRATEGY:
            return True
        return any(service.release.container == "stop" for service in self.gpu_chain(kind.source))

    def vram_needed_mib(self, name: str) -> int:
        return sum(service.vram_mib for service in self.gpu_chain(name))


def _strategy(path: str, raw: Any) -> Strategy:
    if raw in (None, {}):
        return Strategy()
    if not isinstance(raw, dict):
        raise ImproperlyConfigured(f"{path} must be a mapping with 'http' and/or 'container'")
    http = raw.get("http")
    call = None
    if http is not None:
        if not isinstance(http, dict) or not http.get("url"):
            raise ImproperlyConfigured(f"{path}.http needs a url")
        method = str(http.get("method", "POST")).upper()
        if method not in HTTP_METHODS:
            raise ImproperlyConfigured(f"{path}.http.method must be one of {HTTP_METHODS}")
        call = HttpCall(method, str(http["url"]))
    container = raw.get("container") or ""
    if container not in ("", "stop", "start"):
        raise ImproperlyConfigured(f"{path}.container must be 'stop' or 'start', got {container!r}")
    return Strategy(call, container)


def _vram(path: str, raw: Any) -> int:
    values = raw if isinstance(raw, list) else [raw or 0]
    parse = int_parser(0)
    return sum(parse(path, value) for value in values)


def _service(name: str, raw: Any) -> Service:
    path = f"services.{name}"
    if not isinstance(raw, dict):
        raise ImproperlyConfigured(f"{path} must be a mapping")
    return Service(
        name=name,
        stack=str(raw.get("stack", "live")),
        health_url=str(raw.get("health_url", "")),
        gpu=parse_bool(f"{path}.gpu", raw.get("gpu", False)),
        vram_mib=_vram(f"{path}.vram_mib", raw.get("vram_mib")),
        depends_on=tuple(raw.get("depends_on") or ()),
        release=_strategy(f"{path}.release", raw.get("release")),
        reclaim=_strategy(f"{path}.reclaim", raw.get("reclaim")),
        ready=_strategy(f"{path}.ready", raw.get("ready")),
    )


def _handoff_type(name: str, raw: Any, services: dict[str, Service]) -> HandoffType:
    path = f"handoffs.{name}"
    if not isinstance(raw, dict) or "source" not in raw or "destination" not in raw:
        raise ImproperlyConfigured(f"{path} must name a source and a destination service")
    for end in ("source", "destination"):
        if raw[end] not in services:
            raise ImproperlyConfigured(f"{path}.{end} names {raw[end]!r}, which is not under services:")
    pick = choice_parser("services", STACK_STRATEGY)
    return HandoffType(
        name=name,
        source=raw["source"],
        destination=raw["destination"],
        release=pick(f"{path}.release", raw.get("release", "services")),
        signal=pick(f"{path}.signal", raw.get("signal", "services")),
    )


def _phase_timeouts(source: Source) -> dict[str, int]:
    default = source.get(None, "handoffs.phase_timeout_seconds", 120, int_parser(1))
    overrides = source.section("handoffs.phase_timeouts")
    unknown = set(overrides) - set(PHASE_DEADLINES)
    if unknown:
        raise ImproperlyConfigured(f"handoffs.phase_timeouts has unknown phases {sorted(unknown)}")
    parse = int_parser(1)
    return {
        phase: parse(f"handoffs.phase_timeouts.{phase}", overrides.get(phase, default))
        for phase in PHASE_DEADLINES
    }


TYPE_NAMES = ("prime_to_study", "study_to_prime", "live_to_candidate", "candidate_to_live")


def load() -> HandoffSettings:
    source = Source({}, settings.GAIAORCH)
    services = {name: _service(name, raw) for name, raw in source.section("services").items()}
    handoffs = source.section("handoffs")
    types = {name: _handoff_type(name, handoffs[name], services) for name in TYPE_NAMES if name in handoffs}
    http_timeout = source.get(None, "handoffs.http_timeout_seconds", 10, int_parser(1))
    stale_after = source.get(None, "handoffs.stale_after_seconds", 15, int_parser(2))
    if stale_after <= http_timeout:
        # A worker blocked in one outbound call must not look dead to the recovery job.
        raise ImproperlyConfigured("handoffs.stale_after_seconds must exceed handoffs.http_timeout_seconds")
    return HandoffSettings(
        types=types,
        services=services,
        phase_timeouts=_phase_timeouts(source),
        http_timeout_seconds=float(http_timeout),
        stale_after_seconds=stale_after,
        recovery_interval_seconds=source.get(None, "handoffs.recovery_interval_seconds", 5, int_parser(1)),
        signal_retry_max_seconds=float(
            source.get(None, "handoffs.signal_retry_max_seconds", 5, int_parser(1))
        ),
        on_recipient_unacknowledged=source.get(
            None,
            "handoffs.on_recipient_unacknowledged",
            "rollback",
            choice_parser("rollback", "complete_with_warning"),
        ),
        accept_container_stopped_as_proof=source.get(
            None, "handoffs.accept_container_stopped_as_proof", False, parse_bool
        ),
        poll_ms=source.get(None, "gpu.poll_ms", 100, int_parser(10)),
        residual_mib=source.get(None, "gpu.residual_mib", 512, int_parser(0)),
        baseline_mib=source.get(None, "gpu.baseline_mib", None, int_parser(0)),
        baseline_interval_seconds=source.get(None, "gpu.baseline_interval_seconds", 5, int_parser(1)),
        stacks={
            name: str((raw or {}).get("gpu_requester", "")) for name, raw in source.section("stacks").items()
        },
    )
