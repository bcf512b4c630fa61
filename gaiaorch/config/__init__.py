"""The one configuration model of gaiaorch, and where it comes from.

Precedence, stated once: an environment variable listed in ENVIRONMENT > the YAML file
(`GAIAORCH_CONFIG`, default config/orchestrator.yaml) > the defaults in gaiaorch.config.model.
The environment is laid over the YAML document (`read_document`), then the merged document is
parsed by the one strict parser (`gaiaorch.config.parse`): unknown keys and wrong types are
problems naming their path (or their environment variable).

- settings.py calls `startup()`: problems in the process-level sections stop the process at once
  (Django cannot be configured without them); problems in the stack description (services,
  stacks, handoffs, notifications) are reported by the system check `gaiaorch.E001` — so
  `manage.py check` lists them all — and raised by `current()`.
- Everything else calls `current()`: the model of `settings.GAIAORCH`, parsed once per document
  (a test that assigns another document gets that document's model).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import yaml
from django.core.exceptions import ImproperlyConfigured

from gaiaorch.config.model import (
    HANDOFF_PHASES_WITH_DEADLINES,
    RECLAIM,
    RELEASE,
    RIGHTS,
    SERVICE_STRATEGY,
    STACK_STRATEGY,
    STACKS,
    Config,
    ContainerSpec,
    EngineCall,
    Handoffs,
    HandoffType,
    HttpCall,
    Notifications,
    ProcessMatch,
    Service,
    Stack,
    Step,
    Strategy,
    TrustedNetwork,
    Webhook,
)
from gaiaorch.config.parse import parse
from gaiaorch.config.reader import ConfigError, FromEnv, Problem

__all__ = [
    "HANDOFF_PHASES_WITH_DEADLINES",
    "RECLAIM",
    "RELEASE",
    "RIGHTS",
    "SERVICE_STRATEGY",
    "STACKS",
    "STACK_STRATEGY",
    "Config",
    "ConfigError",
    "ContainerSpec",
    "EngineCall",
    "HandoffType",
    "Handoffs",
    "HttpCall",
    "Notifications",
    "Problem",
    "ProcessMatch",
    "Service",
    "Stack",
    "Step",
    "Strategy",
    "TrustedNetwork",
    "Webhook",
    "current",
    "load",
    "parse",
]

# Every environment variable gaiaorch reads, and the document key it overrides.
ENVIRONMENT = {
    "GAIAORCH_PORT": "orchestrator.port",
    "GAIAORCH_BIND": "orchestrator.bind",
    "GAIAORCH_VAR_DIR": "orchestrator.var_dir",
    "GAIAORCH_DEBUG": "orchestrator.debug",
    "GAIAORCH_SECRET_KEY": "orchestrator.secret_key",
    "GAIAORCH_ALLOWED_HOSTS": "orchestrator.allowed_hosts",
    "GAIAORCH_CSRF_TRUSTED_ORIGINS": "orchestrator.csrf_trusted_origins",
    "GAIAORCH_OPEN_READS": "orchestrator.open_reads",
    "GAIAORCH_SECURE_COOKIES": "orchestrator.secure_cookies",
    "GAIAORCH_MAX_BODY_BYTES": "orchestrator.max_body_bytes",
    "GAIAORCH_LOG_LEVEL": "orchestrator.log_level",
    "GAIAORCH_TRUSTED_NETWORKS": "orchestrator.trusted_networks",
    "GAIAORCH_TRUSTED_PROXIES": "orchestrator.trusted_proxies",
    "DATABASE_URL": "database.url",
    "GAIAORCH_SQLITE_PATH": "database.sqlite_path",
    "REDIS_URL": "redis.url",
    "GAIAORCH_WORKERS": "worker.count",
    "GAIAORCH_TASK_TIMEOUT": "worker.task_timeout_seconds",
    "GAIAORCH_WORKER_HEARTBEAT_INTERVAL": "worker.heartbeat_interval_seconds",
    "GAIAORCH_WORKER_HEARTBEAT_MAX_AGE": "worker.heartbeat_max_age_seconds",
    "GAIAORCH_WEBHOOK_CONCURRENCY": "notifications.delivery_concurrency",
    "GAIAORCH_GPU_BACKEND": "gpu.backend",
    "GAIAORCH_GPU_COUNT": "gpu.count",
    "GAIAORCH_FAKE_GPU_FILE": "gpu.fake_file",
    "GAIAORCH_LEASE_DEFAULT_TTL": "leases.default_ttl_seconds",
    "GAIAORCH_LEASE_REAPER_INTERVAL": "leases.reaper_interval_seconds",
    "GAIAORCH_DOCKER_URL": "docker.url",
    "GAIAORCH_DOCKER_TIMEOUT": "docker.timeout_seconds",
}
# Sections Django itself is configured from: a problem there stops the settings module.
SETTINGS_SECTIONS = frozenset({"orchestrator", "database", "redis", "worker", "gpu", "leases", "docker"})


# --- the document ---------------------------------------------------------------------------


def load_yaml(path: Path) -> dict[str, Any]:
    """Read the YAML file; a missing default file is fine, a broken one is not."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return {}
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ImproperlyConfigured(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ImproperlyConfigured(f"{path} must hold a mapping at the top level")
    return data


def config_path(base_dir: Path, environ: Mapping[str, str]) -> Path:
    named = environ.get("GAIAORCH_CONFIG")
    path = Path(named or Path(base_dir) / "config" / "orchestrator.yaml")
    if named and not path.exists():
        raise ImproperlyConfigured(f"GAIAORCH_CONFIG names {path}, which does not exist")
    return path


def overlay(document: Mapping[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """The document with every set environment variable of ENVIRONMENT laid over its key.

    An empty variable counts as unset. A section that is not a mapping is left for the parser to
    refuse."""
    merged = copy.deepcopy(dict(document))
    for variable, path in ENVIRONMENT.items():
        value = environ.get(variable, "")
        if value == "":
            continue
        section, key = path.split(".")
        if merged.get(section) is None:
            merged[section] = {}
        if isinstance(merged[section], dict):
            merged[section][key] = FromEnv(value, variable)
    return merged


def read_document(base_dir: Path, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    environ = os.environ if environ is None else environ
    return overlay(load_yaml(config_path(base_dir, environ)), environ)


# --- parsed models --------------------------------------------------------------------------


@dataclass(frozen=True)
class Parsed:
    document: Mapping[str, Any]
    config: Config
    problems: tuple[Problem, ...]


_parsed: Parsed | None = None


def _parse(document: Mapping[str, Any]) -> Parsed:
    global _parsed
    cached = _parsed
    if cached is None or cached.document is not document:
        config, problems = parse(document)
        # One reference swap: readers in other threads see the old or the new, never half.
        cached = _parsed = Parsed(document, config, tuple(problems))
    return cached


def load(document: Mapping[str, Any]) -> Config:
    """Parse a document; ConfigError listing every problem when there is any."""
    config, problems = parse(document)
    if problems:
        raise ConfigError(problems)
    return config


def startup(document: Mapping[str, Any]) -> Config:
    """For settings.py: the model, after refusing problems in the process-level sections."""
    parsed = _parse(document)
    fatal = [problem for problem in parsed.problems if problem.section in SETTINGS_SECTIONS]
    if fatal:
        # Plain ImproperlyConfigured: it is what Django users look for in a failed start.
        raise ImproperlyConfigured(str(ConfigError(fatal)))
    return parsed.config


def problems() -> tuple[Problem, ...]:
    """Every problem of the current document (for the system check)."""
    from django.conf import settings

    return _parse(settings.GAIAORCH).problems


def current() -> Config:
    """The model of settings.GAIAORCH; ConfigError when that document has problems."""
    from django.conf import settings

    parsed = _parse(settings.GAIAORCH)
    if parsed.problems:
        raise ConfigError(list(parsed.problems))
    return parsed.config


# --- Django database settings ---------------------------------------------------------------


def database_from_url(url: str) -> dict[str, Any]:
    """Turn postgres://user:pass@host:port/name?opt=v into a Django DATABASES entry."""
    parsed = urlparse(url)
    options = {key: values[-1] for key, values in parse_qs(parsed.query).items()}
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parsed.path.lstrip("/")),
        "USER": unquote(parsed.username or ""),
        "PASSWORD": unquote(parsed.password or ""),
        "HOST": parsed.hostname or "",
        "PORT": str(parsed.port or ""),
        "OPTIONS": options,
        "CONN_MAX_AGE": 0,
    }


def sqlite_database(path: Path) -> dict[str, Any]:
    # WAL lets the web process read while the worker writes; IMMEDIATE takes the write lock at
    # BEGIN so two writers queue on the busy timeout instead of failing mid-transaction.
    return {
        "ENGINE": "gaiaorch.sqlite3",  # Django's, with in-process writers queued
        "NAME": str(path),
        "OPTIONS": {
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }
