"""The typed, frozen model of the whole configuration, and the topology helpers on it.

Built only by gaiaorch.config.parse from one document (config/orchestrator.yaml with the
environment laid over it). docs/CONFIGURATION.md describes every field.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import Any

STACKS = ("live", "candidate")
STACK_STRATEGY = "containers"  # a handoff that stops / starts whole stacks
SERVICE_STRATEGY = "services"  # a handoff that calls each service's own strategy
HANDOFF_PHASES_WITH_DEADLINES = (
    "releasing_gpu",
    "waiting_cuda_cleanup",
    "transferring_ownership",
    "signaling_recipient",
    "rolling_back",
)
# What an account can be granted under `grants:`, beyond acting for its own name; operators have
# every right. The container rights are named as the operations they allow (OperationKind).
RIGHTS = {
    "live_stop": "stop the live stack",
    "live_start": "start the live stack",
    "candidate_start": "start the candidate stack (with its GPU lease when gpu_enabled)",
    "candidate_stop": "stop the candidate stack",
    "swap": "swap a live service with its candidate",
    "any_handoff": "start or cancel a handoff it is neither the source nor the destination of",
    "oracle_fallback": "post the Oracle-fallback notice",
}

Network = IPv4Network | IPv6Network


# --- process-level settings -----------------------------------------------------------------


@dataclass(frozen=True)
class TrustedNetwork:
    """Addresses whose requests are accepted without a token (orchestrator.trusted_networks)."""

    network: Network
    acts_as: str = ""  # the account a request naming no service acts as; "": such requests are refused


@dataclass(frozen=True)
class Orchestrator:
    port: int = 6410
    bind: str = "127.0.0.1"
    var_dir: Path | None = None  # None: var/ beside manage.py
    debug: bool = False
    secret_key: str | None = None
    allowed_hosts: tuple[str, ...] = ("127.0.0.1", "localhost", "[::1]")
    csrf_trusted_origins: tuple[str, ...] = ()
    open_reads: bool = True
    secure_cookies: bool = False
    max_body_bytes: int = 256 * 1024
    log_level: str = "INFO"
    own_container: str = ""
    trusted_networks: tuple[TrustedNetwork, ...] = ()  # empty: every write needs a token
    trusted_proxies: tuple[Network, ...] = ()  # peers whose X-Forwarded-For names the client

    def trusted_network_of(self, address: IPv4Address | IPv6Address) -> TrustedNetwork | None:
        """The most specific trusted network holding the address, or None."""
        holding = [trusted for trusted in self.trusted_networks if address in trusted.network]
        return max(holding, key=lambda trusted: trusted.network.prefixlen, default=None)


@dataclass(frozen=True)
class Database:
    url: str | None = None  # postgres://…; None: the embedded SQLite database
    sqlite_path: Path | None = None  # None: var/gaiaorch.sqlite3


@dataclass(frozen=True)
class Redis:
    url: str | None = None


@dataclass(frozen=True)
class Worker:
    # Only long work that moves GPUs queues there: a handoff, the container operation it follows,
    # and one worker left for the heartbeat and the next job.
    count: int = 3
    task_timeout_seconds: int = 900
    heartbeat_interval_seconds: int = 5
    heartbeat_max_age_seconds: int = 30


@dataclass(frozen=True)
class Gpu:
    backend: str = "auto"  # auto: NVML when it initialises, else none
    count: int = 1
    fake_file: Path | None = None  # None: var/fake-gpu.json
    poll_ms: int = 100
    # What a released service may still hold on the GPU: a live process keeps its CUDA context and
    # what its libraries loaded, 618-1,542 MiB on an H200 with torch 2.11 + CUDA 13
    # (docs/nvml-verification.md); services.<name>.residual_mib overrides it per service.
    residual_mib: int = 2048
    headroom_mib: int = 512  # free memory the recipient gets beyond its declared vram_mib
    # A release is settled when free memory stayed within settle_delta_mib over at least
    # settle_window_ms and settle_samples samples.
    settle_window_ms: int = 300
    settle_delta_mib: int = 64
    settle_samples: int = 3
    tenant_interval_seconds: float = 5.0  # how often the ticker looks for unknown GPU tenants
    # Memory NVML's process list may leave unexplained before attribution counts as unavailable.
    unlisted_tolerance_mib: int = 256
    attribution_cache_seconds: float = 2.0  # how long one Docker container listing is reused


@dataclass(frozen=True)
class Leases:
    default_ttl_seconds: int | None = None
    reaper_interval_seconds: int = 1
    # A waiting entry without a TTL lives this long after its last sign of life (a TTL replaces it).
    waiter_grace_seconds: int = 30
    # A grant to a queued entry must be claimed this soon by its requester, or it is passed on.
    claim_window_seconds: int = 10
    # GPU index -> the service that holds it whenever nobody else does (a standing lease).
    residents: Mapping[int, str] = field(default_factory=dict)

    def resident(self, gpu: int) -> str | None:
        return self.residents.get(gpu)


@dataclass(frozen=True)
class Docker:
    url: str = "unix:///var/run/docker.sock"
    timeout_seconds: int = 10
    compose_project: str = ""
    network: str = ""
    reconcile_interval_seconds: float = 5.0


# --- the stack ------------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpCall:
    method: str
    url: str


ENGINES = ("vllm", "sglang", "ollama", "llamacpp")
RELEASE, RECLAIM = "release", "reclaim"  # which way a ladder goes: ready ladders go the reclaim way


@dataclass(frozen=True)
class EngineCall:
    """An inference engine's own memory API at its base URL (docs/engines.md).

    release → reclaim: vllm `POST /sleep?level=N` → `POST /wake_up` (then `GET /is_sleeping`);
    sglang `/release_memory_occupation` → `/resume_memory_occupation`; ollama `POST /api/generate`
    `{model, keep_alive: 0}` → `{model, keep_alive}`; llamacpp `POST /models/unload` → `/models/load`
    `{model}`.
    """

    engine: str
    url: str  # the engine's base URL, without a trailing slash
    level: int = 1  # vllm: the sleep level
    model: str = ""  # ollama, llamacpp: the model to unload / load
    keep_alive: int | str = -1  # ollama: the reload's keep_alive (-1: keep it loaded)


@dataclass(frozen=True)
class Step:
    """One rung of a release or reclaim ladder: a call (plain HTTP in the GAIA contract, or an
    engine's API) and/or a container action, then up to `deadline_seconds` for the memory."""

    http: HttpCall | None = None
    engine: EngineCall | None = None
    container: str = ""  # release: "stop" | "kill"; reclaim and ready: "start"
    deadline_seconds: float | None = None  # None: until the phase deadline

    @property
    def action(self) -> str:
        """The step's kind in one word, for records and metrics: http, vllm, container_stop, …"""
        call = "http" if self.http else (self.engine.engine if self.engine else "")
        container = f"container_{self.container}" if self.container else ""
        return "+".join(part for part in (call, container) if part)

    @property
    def stops_container(self) -> bool:
        return self.container in ("stop", "kill")


@dataclass(frozen=True)
class Strategy:
    """How to make one service give up, take back, or start using the GPU: an ordered ladder of
    steps, tried one after another until the memory shows the step worked."""

    steps: tuple[Step, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.steps)

    @property
    def stops_container(self) -> bool:
        return any(step.stops_container for step in self.steps)


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
class ProcessMatch:
    """How to recognise a service's processes when it does not run in a container of ours."""

    pidfile: str = ""  # that pid and its descendants
    cmdline: str = ""  # a regular expression searched in the command line; matches and descendants


@dataclass(frozen=True)
class Service:
    """A configured service: a GPU lease requester, and a container of a stack when `stack` is set.

    A service without a stack is a plain process (a training script started by hand): it may
    hold leases and take part in handoffs through HTTP strategies, but gaiaorch never starts or
    stops it.
    """

    name: str
    stack: str | None = None
    role: str = ""
    compose_service: str = ""
    container_name: str = ""
    network_alias: str = ""
    port: int | None = None
    health_url: str = ""
    gpu: bool = False
    vram_mib: tuple[int, ...] = ()
    depends_on: tuple[str, ...] = ()
    stop_timeout_seconds: int = 30
    health_timeout_seconds: int = 120
    spec: ContainerSpec | None = None
    process: ProcessMatch | None = None
    residual_mib: int | None = None  # None: gpu.residual_mib
    release: Strategy = Strategy()
    reclaim: Strategy = Strategy()
    ready: Strategy = Strategy()

    @property
    def in_container(self) -> bool:
        return self.stack is not None

    @property
    def vram_need_mib(self) -> int:
        return sum(self.vram_mib)


@dataclass(frozen=True)
class Stack:
    name: str
    gpu_requester: str
    gpu: int = 0
    services: tuple[str, ...] = ()  # the containers this stack starts and stops


@dataclass(frozen=True)
class HandoffType:
    name: str
    source: str
    destination: str
    # "services": each service's own strategies; "containers": whole-stack stop/start.
    release: str = SERVICE_STRATEGY
    signal: str = SERVICE_STRATEGY
    # The source may keep its memory when the recipient fits beside it (both stay resident).
    co_residence: bool = False
    notify: HttpCall | None = None  # told {direction, handoff_id} once the recipient was signalled

    @property
    def slug(self) -> str:
        """The name as it appears in URLs and on the command line (prime-to-study)."""
        return self.name.replace("_", "-")


@dataclass(frozen=True)
class Handoffs:
    types: Mapping[str, HandoffType] = field(default_factory=dict)
    phase_timeouts: Mapping[str, int] = field(
        default_factory=lambda: dict.fromkeys(HANDOFF_PHASES_WITH_DEADLINES, 120)
    )
    http_timeout_seconds: float = 10.0
    stale_after_seconds: int = 15
    recovery_interval_seconds: int = 5
    signal_retry_max_seconds: float = 5.0
    on_recipient_unacknowledged: str = "rollback"
    accept_container_stopped_as_proof: bool = False
    default_wait_seconds: float = 0.0  # how long a seed start waits when its caller does not ask
    # A rollback that left the source without its memory is reclaimed again by the ticker, after
    # base, twice that, four times … seconds (at most max), until it works or an operator acknowledges it.
    reclaim_retry_base_seconds: float = 2.0
    reclaim_retry_max_seconds: float = 300.0

    def type_named(self, name: str) -> HandoffType | None:
        """A type by name, in either spelling (prime_to_study or prime-to-study)."""
        return self.types.get(name.replace("-", "_"))


@dataclass(frozen=True)
class Webhook:
    name: str
    url: str
    types: tuple[str, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    timeout_seconds: float = 5.0
    max_attempts: int = 8


@dataclass(frozen=True)
class Notifications:
    oracle_dedup_window_seconds: int = 60
    relay_poll_ms: int = 50
    replay_limit: int = 10_000
    client_queue_size: int = 1000
    slow_client_timeout_seconds: float = 5.0
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 300.0
    delivery_concurrency: int = 4  # webhook attempts the ticker makes at once
    webhooks: tuple[Webhook, ...] = ()

    def webhook_named(self, name: str) -> Webhook | None:
        return next((hook for hook in self.webhooks if hook.name == name), None)


# --- the whole ----------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Config:
    orchestrator: Orchestrator = Orchestrator()
    database: Database = Database()
    redis: Redis = Redis()
    worker: Worker = Worker()
    gpu: Gpu = Gpu()
    leases: Leases = Leases()
    docker: Docker = Docker()
    services: Mapping[str, Service] = field(default_factory=dict)
    stacks: Mapping[str, Stack] = field(default_factory=dict)
    handoffs: Handoffs = Handoffs()
    notifications: Notifications = Notifications()
    grants: Mapping[str, frozenset[str]] = field(default_factory=dict)  # account -> rights
    document: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def granted(self, account: str, right: str) -> bool:
        return right in self.grants.get(account, ())

    # --- services and requesters

    def service(self, name: str) -> Service | None:
        return self.services.get(name)

    def requesters(self) -> list[str]:
        """Who may hold a GPU lease: every configured service, containers and processes alike."""
        return sorted(self.services)

    def containers(self) -> list[Service]:
        """The services gaiaorch runs as containers: every service of a stack."""
        return [service for service in self.services.values() if service.stack is not None]

    def stack_services(self, stack: str) -> list[Service]:
        return [self.services[name] for name in self.stacks[stack].services] if stack in self.stacks else []

    def stack_gpu_services(self, stack: str) -> list[Service]:
        return [service for service in self.stack_services(stack) if service.gpu]

    def twin(self, service: Service) -> Service | None:
        """The service of the other stack with the same role (live <-> candidate)."""
        if service.stack is None:
            return None
        return next(
            (
                other
                for other in self.services.values()
                if other.stack is not None and other.role == service.role and other.stack != service.stack
            ),
            None,
        )

    # --- container order

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

    # --- GPU chains (handoffs)

    def gpu_chain(self, name: str) -> list[Service]:
        """The service and the GPU-using services it depends on, the service itself first.

        gaia-core holds the lease while gaia-prime holds the VRAM: giving up the GPU means asking
        gaia-core to stop using Prime, then Prime to free its memory.
        """
        root = self.services[name]
        dependencies = [self.services[dep] for dep in root.depends_on]
        return [root, *(dep for dep in dependencies if dep.gpu)]

    def vram_needed_mib(self, name: str) -> int:
        return sum(service.vram_need_mib for service in self.gpu_chain(name))

    def residual_mib(self, service: Service) -> int:
        """What `service` may still hold on a GPU once it has released it."""
        return self.gpu.residual_mib if service.residual_mib is None else service.residual_mib

    def stops_container(self, kind: HandoffType) -> bool:
        """Whether releasing can stop a container: the only proof of cleanup accepted without telemetry."""
        if kind.release == STACK_STRATEGY:
            return True
        return any(service.release.stops_container for service in self.gpu_chain(kind.source))
