"""Configuration loading: environment > config/orchestrator.yaml > defaults.

Every setting has one name in the YAML file (a dotted path) and, for the scalar ones, one
environment variable. The strict parsers below refuse nonsense with ImproperlyConfigured
instead of guessing, so a typo in a deployment fails at start-up, not at 2 a.m.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import yaml
from django.core.exceptions import ImproperlyConfigured

TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}
MISSING = object()


def parse_bool(name: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    word = str(raw).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ImproperlyConfigured(f"{name} must be one of {sorted(TRUE_WORDS | FALSE_WORDS)}, got {raw!r}")


def int_parser(minimum: int | None = None, maximum: int | None = None) -> Callable[[str, Any], int]:
    def parse_int(name: str, raw: Any) -> int:
        if isinstance(raw, bool):
            raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}")
        try:
            value = int(str(raw).strip())
        except ValueError:
            raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}") from None
        if minimum is not None and value < minimum:
            raise ImproperlyConfigured(f"{name} must be >= {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ImproperlyConfigured(f"{name} must be <= {maximum}, got {value}")
        return value

    return parse_int


def choice_parser(*choices: str) -> Callable[[str, Any], str]:
    def parse_choice(name: str, raw: Any) -> str:
        value = str(raw).strip().lower()
        if value not in choices:
            raise ImproperlyConfigured(f"{name} must be one of {list(choices)}, got {raw!r}")
        return value

    return parse_choice


def parse_str(name: str, raw: Any) -> str:
    value = str(raw).strip()
    if not value:
        raise ImproperlyConfigured(f"{name} must not be empty")
    return value


def parse_secret(name: str, raw: Any) -> str:
    value = parse_str(name, raw)
    if len(value) < 32:
        raise ImproperlyConfigured(f"{name} must be at least 32 characters long")
    return value


def parse_list(name: str, raw: Any) -> list[str]:
    if isinstance(raw, list):
        return [parse_str(name, item) for item in raw]
    return [item.strip() for item in str(raw).split(",") if item.strip()]


def load_yaml(path: Path) -> dict[str, Any]:
    """Read the YAML file; a missing default file is fine, a broken one is not."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ImproperlyConfigured(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ImproperlyConfigured(f"{path} must hold a mapping at the top level")
    return data


def lookup(data: Mapping[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return MISSING
        node = node[part]
    return node


class Source:
    """One place to read settings from, in the documented precedence order."""

    def __init__(self, environ: Mapping[str, str], yaml_data: Mapping[str, Any]):
        self.environ = environ
        self.yaml_data = yaml_data

    def get(self, env: str | None, path: str | None, default: Any, parse=parse_str) -> Any:
        if env and self.environ.get(env, "") != "":
            return parse(env, self.environ[env])
        if path:
            value = lookup(self.yaml_data, path)
            if value is not MISSING and value is not None:
                return parse(path, value)
        return default

    def section(self, path: str) -> dict[str, Any]:
        value = lookup(self.yaml_data, path)
        if value is MISSING or value is None:
            return {}
        if not isinstance(value, dict):
            raise ImproperlyConfigured(f"{path} must be a mapping")
        return value


def source_from_environment(base_dir: Path, environ: Mapping[str, str] | None = None) -> Source:
    environ = os.environ if environ is None else environ
    path = Path(environ.get("GAIAORCH_CONFIG") or base_dir / "config" / "orchestrator.yaml")
    if environ.get("GAIAORCH_CONFIG") and not path.exists():
        raise ImproperlyConfigured(f"GAIAORCH_CONFIG names {path}, which does not exist")
    return Source(environ, load_yaml(path))


def database_from_url(url: str) -> dict[str, Any]:
    """Turn postgres://user:pass@host:port/name?opt=v into a Django DATABASES entry."""
    parsed = urlparse(url)
    if parsed.scheme not in {"postgres", "postgresql"}:
        raise ImproperlyConfigured(f"DATABASE_URL must start with postgres://, got {parsed.scheme!r}")
    name = unquote(parsed.path.lstrip("/"))
    if not name:
        raise ImproperlyConfigured("DATABASE_URL must name a database")
    options = {key: values[-1] for key, values in parse_qs(parsed.query).items()}
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
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
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(path),
        "OPTIONS": {
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }
