"""The one parser: a configuration document in, a frozen Config and every problem found out."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlparse

from gaiaorch.config.model import (
    ENGINES,
    HANDOFF_PHASES_WITH_DEADLINES,
    RECLAIM,
    RELEASE,
    RIGHTS,
    SERVICE_STRATEGY,
    STACK_STRATEGY,
    STACKS,
    Config,
    ContainerSpec,
    Database,
    Docker,
    EngineCall,
    Gpu,
    Handoffs,
    HandoffType,
    HttpCall,
    Leases,
    Notifications,
    Orchestrator,
    ProcessMatch,
    Redis,
    Service,
    Stack,
    Step,
    Strategy,
    TrustedNetwork,
    Webhook,
    Worker,
)
from gaiaorch.config.reader import Node, Problems
from gaiaorch.redaction import public_origin, public_webhook_name

HTTP_METHODS = ("GET", "POST", "PUT", "DELETE")
TELEMETRY_BACKENDS = ("auto", "nvml", "fake", "none")
# Keys that were once read, and why they are not any more (a clear refusal beats "not a known key").
REMOVED_GPU_KEYS = {
    "baseline_mib": "is no longer read: the driver's reservation is measured (NVML memory info v2) and "
    "a release is judged by who holds the memory (docs/handoffs.md); remove it",
    "baseline_interval_seconds": "is no longer read: no idle baseline is sampled any more; remove it",
}
HANDOFF_TYPE_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
ACCOUNT_NAME = re.compile(r"[\w.@+-]{1,150}")  # Django's user names
HANDOFF_SETTINGS = (
    "phase_timeout_seconds",
    "phase_timeouts",
    "http_timeout_seconds",
    "stale_after_seconds",
    "recovery_interval_seconds",
    "signal_retry_max_seconds",
    "on_recipient_unacknowledged",
    "accept_container_stopped_as_proof",
    "default_wait_seconds",
    "reclaim_retry_base_seconds",
    "reclaim_retry_max_seconds",
)
SECTIONS = (
    "orchestrator",
    "database",
    "redis",
    "worker",
    "gpu",
    "leases",
    "docker",
    "stacks",
    "services",
    "handoffs",
    "notifications",
    "grants",
)


def parse(document: Mapping[str, Any]) -> tuple[Config, list]:
    """Parse a whole document; returns the model (defaults where a value was refused) and problems."""
    problems = Problems()
    top = Node("", document, problems)
    services = _services(top, problems)
    stacks = _stacks(top.node("stacks"), services, problems)
    config = Config(
        orchestrator=_orchestrator(top.node("orchestrator")),
        database=_database(top.node("database")),
        redis=_redis(top.node("redis")),
        worker=_worker(top.node("worker")),
        gpu=_gpu(top.node("gpu")),
        leases=_leases(top.node("leases"), services),
        docker=_docker(top.node("docker")),
        services=MappingProxyType(services),
        stacks=MappingProxyType(stacks),
        handoffs=_handoffs(top.node("handoffs"), services),
        notifications=_notifications(top.node("notifications")),
        grants=MappingProxyType(_grants(top.node("grants"))),
        document=document,
    )
    _check_own_container(config, problems)
    top.finish()
    return config, problems.found


def _redis(node: Node) -> Redis:
    url = node.text("url") or None
    if url and urlparse(url).scheme not in {"redis", "rediss", "unix"}:
        node.fail("url", f"must start with redis://, rediss:// or unix://, got {urlparse(url).scheme!r}")
        url = None
    node.finish()
    return Redis(url=url)


# --- process-level sections -----------------------------------------------------------------


def _orchestrator(node: Node) -> Orchestrator:
    defaults = Orchestrator()
    var_dir = node.text("var_dir")
    parsed = Orchestrator(
        port=node.integer("port", defaults.port, 1, 65535),
        bind=node.text("bind", defaults.bind),
        var_dir=Path(var_dir) if var_dir else None,
        debug=node.boolean("debug", defaults.debug),
        secret_key=_secret(node, "secret_key"),
        allowed_hosts=node.strings("allowed_hosts", defaults.allowed_hosts),
        csrf_trusted_origins=node.strings("csrf_trusted_origins"),
        open_reads=node.boolean("open_reads", defaults.open_reads),
        secure_cookies=node.boolean("secure_cookies", defaults.secure_cookies),
        max_body_bytes=node.integer("max_body_bytes", defaults.max_body_bytes, 1024, 64 * 1024 * 1024),
        log_level=node.choice("log_level", "info", ("debug", "info", "warning", "error", "critical")).upper(),
        own_container=node.text("own_container"),
        trusted_networks=_trusted_networks(node),
        trusted_proxies=tuple(
            network
            for where, entry, raw in _entries(node, "trusted_proxies")
            if (network := _network(node.problems, where, entry, raw))
        ),
    )
    node.finish()
    return parsed


def _entries(node: Node, key: str) -> list[tuple[str, Any, Any]]:
    """(path, entry, raw) of each entry of a list; an environment value (or one YAML string) is
    split at commas and spaces, and its problems name the variable."""
    raw = node.raw(key)
    if raw is None:
        return []
    if isinstance(raw, str):
        return [(node.where(key), word, raw) for word in re.split(r"[,\s]+", raw) if word]
    if not isinstance(raw, list):
        node.fail(key, f"must be a list, got {raw!r}", raw)
        return []
    return [(f"{node.where(key)}[{index}]", entry, entry) for index, entry in enumerate(raw)]


def _trusted_networks(node: Node) -> tuple[TrustedNetwork, ...]:
    """Each entry: "172.18.0.0/16", "127.0.0.1/32=olivia" or {network, acts_as}."""
    trusted: list[TrustedNetwork] = []
    for where, entry, raw in _entries(node, "trusted_networks"):
        if isinstance(entry, Mapping):
            item = Node(where, entry, node.problems)
            text, acts_as = item.text("network", required=True), item.text("acts_as")
            acts_as = _account(node.problems, item.where("acts_as"), acts_as, raw)
            item.finish()
            if not text:  # already reported as required
                continue
            where = item.where("network")
        elif isinstance(entry, str):
            text, _, named = entry.partition("=")
            acts_as = _account(node.problems, where, named, raw)
        else:
            text, acts_as = entry, ""
        network = _network(node.problems, where, text, raw)
        if network and any(known.network == network for known in trusted):
            node.problems.add(where, f"lists {network} twice", raw)
        elif network:
            trusted.append(TrustedNetwork(network, acts_as))
    return tuple(trusted)


def _network(problems: Problems, where: str, text: Any, raw: Any):
    """An IP network (a bare address is one address); None, with a problem, when it is not one."""
    if not isinstance(text, str):
        problems.add(where, f"must be an IP network such as 172.18.0.0/16, got {text!r}", raw)
        return None
    try:
        network = ipaddress.ip_network(text.strip())
    except ValueError:
        try:
            meant = ipaddress.ip_network(text.strip(), strict=False)
        except ValueError:
            problems.add(where, f"must be an IP network such as 172.18.0.0/16, got {text!r}", raw)
        else:
            problems.add(where, f"names {text}, which has host bits set; did you mean {meant}?", raw)
        return None
    if network.prefixlen == 0:
        problems.add(where, f"names {text}, which is every address; list the networks callers use", raw)
        return None
    return network


def _account(problems: Problems, where: str, name: str, raw: Any) -> str:
    if name and not ACCOUNT_NAME.fullmatch(name):
        problems.add(where, f"must be an account name (letters, digits and @.+-_), got {name!r}", raw)
        return ""
    return name


# --- rights ---------------------------------------------------------------------------------


def _grants(node: Node) -> dict[str, frozenset[str]]:
    """{account: [right, …]}: what each account may do beyond acting for its own name."""
    grants = {}
    for account in node.names():
        rights = node.strings(account)
        if not ACCOUNT_NAME.fullmatch(account):
            node.fail(account, "is not an account name (letters, digits and @.+-_)")
            continue
        unknown = [right for right in rights if right not in RIGHTS]
        if unknown:
            node.fail(account, f"names unknown rights {unknown}; rights: {', '.join(RIGHTS)}")
        grants[account] = frozenset(right for right in rights if right in RIGHTS)
    node.finish()
    return grants


def _secret(node: Node, key: str) -> str | None:
    raw = node.raw(key)
    value = node.text(key) if raw is not None else ""
    if value and len(value) < 32:
        node.fail(key, "must be at least 32 characters long", raw)
        return None
    return value or None


def _database(node: Node) -> Database:
    url = node.text("url") or None
    if url and urlparse(url).scheme not in {"postgres", "postgresql"}:
        node.fail("url", f"must start with postgres://, got {urlparse(url).scheme!r}", node.raw("url"))
        url = None
    elif url and not urlparse(url).path.lstrip("/"):
        node.fail("url", "must name a database", node.raw("url"))
        url = None
    sqlite_path = node.text("sqlite_path")
    node.finish()
    return Database(url=url, sqlite_path=Path(sqlite_path) if sqlite_path else None)


def _worker(node: Node) -> Worker:
    defaults = Worker()
    parsed = Worker(
        count=node.integer("count", defaults.count, 1, 64),
        task_timeout_seconds=node.integer("task_timeout_seconds", defaults.task_timeout_seconds, 10),
        heartbeat_interval_seconds=node.integer(
            "heartbeat_interval_seconds", defaults.heartbeat_interval_seconds, 1, 300
        ),
        heartbeat_max_age_seconds=node.integer(
            "heartbeat_max_age_seconds", defaults.heartbeat_max_age_seconds, 2, 3600
        ),
    )
    node.finish()
    return parsed


def _gpu(node: Node) -> Gpu:
    defaults = Gpu()
    fake_file = node.text("fake_file")
    parsed = Gpu(
        backend=node.choice("backend", defaults.backend, TELEMETRY_BACKENDS),
        count=node.integer("count", defaults.count, 0, 64),
        fake_file=Path(fake_file) if fake_file else None,
        poll_ms=node.integer("poll_ms", defaults.poll_ms, 10, 60_000),
        residual_mib=node.integer("residual_mib", defaults.residual_mib, 0, 1 << 30),
        headroom_mib=node.integer("headroom_mib", defaults.headroom_mib, 0, 1 << 30),
        settle_window_ms=node.integer("settle_window_ms", defaults.settle_window_ms, 0, 600_000),
        settle_delta_mib=node.integer("settle_delta_mib", defaults.settle_delta_mib, 0, 1 << 30),
        settle_samples=node.integer("settle_samples", defaults.settle_samples, 1, 1000),
        tenant_interval_seconds=node.number(
            "tenant_interval_seconds", defaults.tenant_interval_seconds, 0.1, 3600
        ),
        unlisted_tolerance_mib=node.integer("unlisted_tolerance_mib", defaults.unlisted_tolerance_mib, 0),
        attribution_cache_seconds=node.number(
            "attribution_cache_seconds", defaults.attribution_cache_seconds, 0, 3600
        ),
    )
    for key, why in REMOVED_GPU_KEYS.items():
        if node.has(key):
            node.fail(key, why, node.raw(key))
    node.finish()
    return parsed


MAX_GPU_INDEX = 63  # gpu.count is at most 64


def _leases(node: Node, services: Mapping[str, Service]) -> Leases:
    defaults = Leases()
    parsed = Leases(
        default_ttl_seconds=node.integer("default_ttl_seconds", None, 1, 7 * 24 * 3600),
        reaper_interval_seconds=node.integer("reaper_interval_seconds", 1, 1, 60),
        waiter_grace_seconds=node.integer(
            "waiter_grace_seconds", defaults.waiter_grace_seconds, 1, 24 * 3600
        ),
        claim_window_seconds=node.integer("claim_window_seconds", defaults.claim_window_seconds, 1, 3600),
        residents=MappingProxyType(_residents(node, services)),
    )
    node.finish()
    return parsed


def _residents(node: Node, services: Mapping[str, Service]) -> dict[int, str]:
    """{GPU index: service}; YAML writes the index as a number, JSON as a string of digits."""
    raw = node.raw("residents")
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        node.fail("residents", f"must be a mapping of GPU index to service name, got {raw!r}", raw)
        return {}
    residents = {}
    for key, name in raw.items():
        where = f"residents.{key}"
        index = key if isinstance(key, int) and not isinstance(key, bool) else None
        if isinstance(key, str) and key.strip().isdigit():
            index = int(key)
        if index is None or not 0 <= index <= MAX_GPU_INDEX:
            node.fail(where, f"the key must be a GPU index from 0 to {MAX_GPU_INDEX}, got {key!r}")
        elif not isinstance(name, str) or name not in services:
            node.fail(where, f"names {name!r}, which is not under services:", name)
        else:
            residents[index] = name
    return residents


def _docker(node: Node) -> Docker:
    defaults = Docker()
    parsed = Docker(
        url=node.text("url", defaults.url),
        timeout_seconds=node.integer("timeout_seconds", defaults.timeout_seconds, 1, 600),
        compose_project=node.text("compose_project"),
        network=node.text("network"),
        reconcile_interval_seconds=node.number(
            "reconcile_interval_seconds", defaults.reconcile_interval_seconds, 0.05, 3600
        ),
    )
    node.finish()
    return parsed


# --- services -------------------------------------------------------------------------------


def _services(top: Node, problems: Problems) -> dict[str, Service]:
    services = {name: _service(name, node) for name, node in top.children("services")}
    _check_dependencies(services, problems)
    _check_aliases(services, problems)
    return services


CONTAINER_KEYS = ("compose_service", "container_name", "network_alias", "container", "stop_timeout_seconds")


def _service(name: str, node: Node) -> Service:
    stack = node.raw("stack")
    if stack is not None and stack not in STACKS:
        node.fail("stack", f"must be one of {list(STACKS)}, got {stack!r}", stack)
        stack = None
    defaults = Service(name)
    release, reclaim, ready = (_ladder(node, key, stack) for key in ("release", "reclaim", "ready"))
    service = Service(
        name=name,
        stack=stack,
        role=node.text("role", name),
        health_url=node.text("health_url"),
        port=node.integer("port", None, 1, 65535),
        gpu=node.boolean("gpu", False),
        vram_mib=_vram(node),
        depends_on=node.strings("depends_on"),
        health_timeout_seconds=node.integer("health_timeout_seconds", defaults.health_timeout_seconds, 1),
        release=release,
        reclaim=reclaim,
        ready=ready,
        process=_process(node.node("process")) if node.has("process") else None,
        residual_mib=node.integer("residual_mib", None, 0, 1 << 30),
        **(_container_fields(node, name) if stack else {}),
    )
    if not stack:
        _refuse_container_keys(node)
    node.finish()
    return service


def _process(node: Node) -> ProcessMatch:
    match = ProcessMatch(pidfile=node.text("pidfile"), cmdline=node.text("cmdline"))
    if match.cmdline:
        try:
            re.compile(match.cmdline)
        except re.error as exc:
            node.fail("cmdline", f"must be a regular expression ({exc}), got {match.cmdline!r}")
            match = ProcessMatch(pidfile=match.pidfile)
    if not node.broken and not (node.has("pidfile") or node.has("cmdline")):
        node.problems.add(node.path, "needs a pidfile or a cmdline pattern")
    node.finish()
    return match


def _container_fields(node: Node, name: str) -> dict[str, Any]:
    compose_service = node.text("compose_service")
    container_name = node.text("container_name")
    if not compose_service and not container_name:
        node.problems.add(node.path, "needs compose_service or container_name to find its container")
    alias = node.text("network_alias", compose_service or name)
    if alias == container_name:
        node.fail("network_alias", "must differ from container_name so a swap can move it")
    return {
        "compose_service": compose_service,
        "container_name": container_name,
        "network_alias": alias,
        "stop_timeout_seconds": node.integer("stop_timeout_seconds", 30, 0),
        "spec": _spec(node.node("container")) if node.has("container") else None,
    }


def _refuse_container_keys(node: Node) -> None:
    """A service outside every stack is a plain process: container keys would be ignored."""
    for key in CONTAINER_KEYS:
        if node.has(key):
            node.raw(key)
            node.fail(key, "needs the service to be in a stack (set stack: live or candidate)")


def _vram(node: Node) -> tuple[int, ...]:
    """A number, or a list of numbers when the service loads several models."""
    raw = node.raw("vram_mib")
    if raw is None:
        return ()
    figures = raw if isinstance(raw, list) else [raw]
    valid = []
    for figure in figures:
        if isinstance(figure, bool) or not isinstance(figure, int) or figure < 1:
            node.fail("vram_mib", f"must be an integer >= 1, got {figure!r}", figure)
        else:
            valid.append(figure)
    return tuple(valid)


CONTAINER_ACTIONS = {RELEASE: ("stop", "kill"), RECLAIM: ("start",)}
STEP_CALLS = ("http", *ENGINES)


def _ladder(node: Node, key: str, stack: str | None) -> Strategy:
    """`release` / `reclaim` / `ready`: one step (a mapping) or an ordered list of steps."""
    raw = node.raw(key)
    direction = RELEASE if key == "release" else RECLAIM
    if raw is None:
        return Strategy()
    if isinstance(raw, Mapping):
        return Strategy((_step(node.node(key), stack, direction),))
    if not isinstance(raw, list):
        node.fail(key, f"must be a step (a mapping) or a list of steps, got {raw!r}", raw)
        return Strategy()
    if not raw:
        node.fail(key, "must list at least one step")
        return Strategy()
    steps = tuple(_step(entry, stack, direction) for _, entry in node.items(key))
    for index, step in enumerate(steps[:-1]):
        if step.deadline_seconds is None:
            node.fail(
                f"{key}[{index}].deadline_seconds",
                "is required on every step but the last: how long the memory may take to go "
                "before the next step is tried",
            )
    return Strategy(steps)


def _step(node: Node, stack: str | None, direction: str) -> Step:
    calls = [name for name in STEP_CALLS if node.has(name)]
    if len(calls) > 1:
        node.problems.add(node.path, f"makes one call, not {len(calls)} ({', '.join(calls)})")
    http = _http_call(node.node("http")) if node.has("http") else None
    engines = [_engine(name, node.node(name)) for name in ENGINES if node.has(name)]
    container = node.choice("container", "", CONTAINER_ACTIONS[direction])
    if container and not stack:
        node.fail("container", "needs the service to be in a stack (set stack: live or candidate)")
        container = ""
    deadline = node.number("deadline_seconds", None, 0.1, 86_400)
    if not node.broken and not (calls or node.has("container")):
        node.problems.add(
            node.path, f"needs a call ({', '.join(STEP_CALLS)}) or a container action ({direction} side)"
        )
    node.finish()
    return Step(
        http=http, engine=engines[0] if engines else None, container=container, deadline_seconds=deadline
    )


def _http_call(node: Node) -> HttpCall | None:
    url = node.text("url", required=True)
    method = node.choice("method", "post", tuple(m.lower() for m in HTTP_METHODS)).upper()
    node.finish()
    return HttpCall(method, url) if url else None


def _base_url(node: Node) -> str:
    url = node.text("url", required=True)
    if url and urlparse(url).scheme not in {"http", "https"}:
        node.fail("url", f"must be an http(s) URL (the engine's base address), got {url!r}")
    return url.rstrip("/")


def _engine(engine: str, node: Node) -> EngineCall:
    url = _base_url(node)
    fields: dict[str, Any] = {}
    if engine == "vllm":
        fields["level"] = node.integer("level", 1, 1, 2)
    if engine in ("ollama", "llamacpp"):
        fields["model"] = node.text("model", required=True)
    if engine == "ollama":
        keep_alive = node.raw("keep_alive")
        if keep_alive is not None and (isinstance(keep_alive, bool) or not isinstance(keep_alive, int | str)):
            node.fail(
                "keep_alive", f"must be a number of seconds or a duration such as '10m', got {keep_alive!r}"
            )
        elif keep_alive is not None:
            fields["keep_alive"] = keep_alive
    node.finish()
    return EngineCall(engine, url, **fields)


def _spec(node: Node) -> ContainerSpec:
    spec = ContainerSpec(
        image=node.text("image", required=True),
        command=_words(node, "command"),
        entrypoint=_words(node, "entrypoint"),
        environment=MappingProxyType(node.string_map("environment")),
        ports=MappingProxyType(_ports(node.node("ports"))),
        labels=MappingProxyType(node.string_map("labels")),
    )
    node.finish()
    return spec


def _words(node: Node, key: str) -> tuple[str, ...] | None:
    raw = node.raw(key)
    if raw is None:
        return None
    if isinstance(raw, str):
        return tuple(raw.split())
    if not isinstance(raw, list) or not all(isinstance(word, str | int) for word in raw):
        node.fail(key, f"must be a list of strings, got {raw!r}", raw)
        return None
    return tuple(str(word) for word in raw)


def _ports(node: Node) -> dict[str, str]:
    """{"8080/tcp": "127.0.0.1:6415"}; a bare container port gets /tcp."""
    ports = {}
    for container_port in node.names():
        key = container_port if "/" in container_port else f"{container_port}/tcp"
        ports[key] = node.text(container_port, required=True)
    return ports


def _check_dependencies(services: dict[str, Service], problems: Problems) -> None:
    for service in services.values():
        where = f"services.{service.name}.depends_on"
        for dependency in service.depends_on:
            other = services.get(dependency)
            if other is None:
                problems.add(where, f"names unknown service {dependency!r}")
            elif service.stack and other.stack != service.stack:
                problems.add(where, f"{dependency!r} is in the {other.stack} stack, not {service.stack}")
    _check_cycles(services, problems)


def _check_cycles(services: dict[str, Service], problems: Problems) -> None:
    done: set[str] = set()

    def visit(name: str, path: tuple[str, ...]) -> bool:
        if name in path:
            cycle = " -> ".join((*path[path.index(name) :], name))
            problems.add("services", f"dependency cycle {cycle}")
            return False
        if name in done or name not in services:
            return True
        for dependency in services[name].depends_on:
            if not visit(dependency, (*path, name)):
                return False
        done.add(name)
        return True

    for name in services:
        if not visit(name, ()):
            # A cycle makes ordering impossible: drop the dependencies so the rest still parses.
            for service_name in list(services):
                services[service_name] = _without_dependencies(services[service_name])
            return


def _without_dependencies(service: Service) -> Service:
    return replace(service, depends_on=())


def _check_aliases(services: dict[str, Service], problems: Problems) -> None:
    owners: dict[str, str] = {}
    for service in services.values():
        if not service.stack:
            continue
        other = owners.setdefault(service.network_alias, service.name)
        if other != service.name:
            problems.add(
                f"services.{service.name}.network_alias",
                f"{service.network_alias!r} is already the network name of {other}",
            )


# --- stacks ---------------------------------------------------------------------------------


def _stacks(node: Node, services: dict[str, Service], problems: Problems) -> dict[str, Stack]:
    unknown = sorted(set(node.names()) - set(STACKS))
    if unknown:
        problems.add("stacks", f"unknown stack(s) {unknown}; stacks are {list(STACKS)}")
        node.read.update(unknown)
    stacks = {}
    for name in STACKS:
        entry = node.node(name)
        members = tuple(service.name for service in services.values() if service.stack == name)
        requester = entry.text("gpu_requester", f"gaia-{name}")
        uses_gpu = any(services[member].gpu for member in members)
        if uses_gpu and requester not in services:
            entry.fail("gpu_requester", f"names {requester!r}, which is not under services:")
        stacks[name] = Stack(name, requester, entry.integer("gpu", 0, 0, 63), members)
        entry.finish()
    node.finish()
    return stacks


def _check_own_container(config: Config, problems: Problems) -> None:
    own = config.orchestrator.own_container
    for service in config.services.values():
        if own and service.container_name == own:
            problems.add(f"services.{service.name}", f"is the orchestrator's own container {own!r}")


# --- handoffs -------------------------------------------------------------------------------


def _handoffs(node: Node, services: dict[str, Service]) -> Handoffs:
    defaults = Handoffs()
    types = {}
    for name in node.names():
        if name in HANDOFF_SETTINGS:
            continue
        if not isinstance(node.data[name], Mapping):
            node.raw(name)
            node.fail(
                name,
                "is neither a handoffs setting nor a handoff type (a mapping with source and destination); "
                f"settings: {', '.join(HANDOFF_SETTINGS)}",
            )
            continue
        types[name] = _handoff_type(name, node.node(name), services)
    http_timeout = node.integer("http_timeout_seconds", 10, 1, 3600)
    stale_after = node.integer("stale_after_seconds", defaults.stale_after_seconds, 2, 86_400)
    if stale_after <= http_timeout:
        # A worker blocked in one outbound call must not look dead to the recovery job.
        node.fail("stale_after_seconds", "must exceed handoffs.http_timeout_seconds")
    parsed = Handoffs(
        types=MappingProxyType(types),
        phase_timeouts=MappingProxyType(_phase_timeouts(node)),
        http_timeout_seconds=float(http_timeout),
        stale_after_seconds=stale_after,
        recovery_interval_seconds=node.integer(
            "recovery_interval_seconds", defaults.recovery_interval_seconds, 1, 3600
        ),
        signal_retry_max_seconds=float(node.integer("signal_retry_max_seconds", 5, 1, 3600)),
        on_recipient_unacknowledged=node.choice(
            "on_recipient_unacknowledged", "rollback", ("rollback", "complete_with_warning")
        ),
        accept_container_stopped_as_proof=node.boolean("accept_container_stopped_as_proof", False),
        default_wait_seconds=node.number("default_wait_seconds", 0.0, 0, 3600),
        reclaim_retry_base_seconds=node.number("reclaim_retry_base_seconds", 2.0, 0.1, 3600),
        reclaim_retry_max_seconds=node.number("reclaim_retry_max_seconds", 300.0, 0.1, 86_400),
    )
    if parsed.reclaim_retry_max_seconds < parsed.reclaim_retry_base_seconds:
        node.fail("reclaim_retry_max_seconds", "must be at least handoffs.reclaim_retry_base_seconds")
    node.finish()
    return parsed


def _handoff_type(name: str, node: Node, services: dict[str, Service]) -> HandoffType:
    if not HANDOFF_TYPE_NAME.fullmatch(name):
        node.problems.add(
            node.path, "a handoff type name is lower case letters, digits and _ (at most 32, a letter first)"
        )
    ends = {}
    for end in ("source", "destination"):
        ends[end] = node.text(end, required=True)
        if ends[end] and ends[end] not in services:
            node.fail(end, f"names {ends[end]!r}, which is not under services:")
    strategies = (SERVICE_STRATEGY, STACK_STRATEGY)
    kind = HandoffType(
        name=name,
        source=ends["source"],
        destination=ends["destination"],
        release=node.choice("release", SERVICE_STRATEGY, strategies),
        signal=node.choice("signal", SERVICE_STRATEGY, strategies),
        co_residence=node.boolean("co_residence", False),
        notify=_http_call(node.node("notify")) if node.has("notify") else None,
    )
    for end, strategy in (("source", kind.release), ("destination", kind.signal)):
        service = services.get(ends[end])
        if strategy == STACK_STRATEGY and service is not None and not service.stack:
            node.fail(end, f"{service.name} is in no stack, so its stack cannot be stopped or started")
    node.finish()
    return kind


def _phase_timeouts(node: Node) -> dict[str, int]:
    default = node.integer("phase_timeout_seconds", 120, 1, 86_400)
    overrides = node.node("phase_timeouts")
    unknown = sorted(set(overrides.names()) - set(HANDOFF_PHASES_WITH_DEADLINES))
    if unknown:
        node.fail(
            "phase_timeouts", f"has unknown phases {unknown}; phases: {list(HANDOFF_PHASES_WITH_DEADLINES)}"
        )
        overrides.read.update(unknown)
    timeouts = {
        phase: overrides.integer(phase, default, 1, 86_400) for phase in HANDOFF_PHASES_WITH_DEADLINES
    }
    overrides.finish()
    return timeouts


# --- notifications --------------------------------------------------------------------------


def _notifications(node: Node) -> Notifications:
    defaults = Notifications()
    webhooks = tuple(_webhook(node_) for _, node_ in node.items("webhooks"))
    names = [hook.name for hook in webhooks]
    if len(set(names)) != len(names):
        node.fail("webhooks", f"names must be unique, got {names}")
    parsed = Notifications(
        oracle_dedup_window_seconds=node.integer(
            "oracle_dedup_window_seconds", defaults.oracle_dedup_window_seconds, 0, 86_400
        ),
        relay_poll_ms=node.integer("relay_poll_ms", defaults.relay_poll_ms, 10, 10_000),
        replay_limit=node.integer("replay_limit", defaults.replay_limit, 0, 1_000_000),
        client_queue_size=node.integer("client_queue_size", defaults.client_queue_size, 1, 100_000),
        slow_client_timeout_seconds=node.number(
            "slow_client_timeout_seconds", defaults.slow_client_timeout_seconds, 0.05, 600
        ),
        retry_base_seconds=node.number("retry_base_seconds", defaults.retry_base_seconds, 0.01, 3600),
        retry_max_seconds=node.number("retry_max_seconds", defaults.retry_max_seconds, 0.01, 86_400),
        delivery_concurrency=node.integer("delivery_concurrency", defaults.delivery_concurrency, 2, 64),
        webhooks=webhooks,
    )
    node.finish()
    return parsed


def _webhook(node: Node) -> Webhook:
    url = node.text("url", required=True)
    if url and urlparse(url).scheme not in {"http", "https"}:
        # Only the origin: a webhook URL's path and query are its secret.
        node.fail("url", f"must be an http(s) URL, got {public_origin(url)!r}")
    hook = Webhook(
        name=(node.text("name") or public_webhook_name(url))[:200],
        url=url,
        types=node.strings("types"),
        headers=tuple(node.string_map("headers").items()),
        timeout_seconds=node.number("timeout_seconds", 5.0, 0.1, 120),
        max_attempts=node.integer("max_attempts", 8, 1, 100),
    )
    node.finish()
    return hook
