"""The strict reader every section parser uses: typed reads of one mapping, problems named by path.

A read never raises: a value of the wrong type or out of range is recorded as a `Problem` naming
its dotted path (or the environment variable it came from) and the default is used, so one pass
reports every mistake in the document at once. Keys nobody read are unknown keys, also problems.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ImproperlyConfigured

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")
BOOLEAN_WORDS = sorted(TRUE_WORDS + FALSE_WORDS)
NOT_GIVEN = object()


class FromEnv(str):
    """A value taken from an environment variable: always text, converted by the reader."""

    variable: str

    def __new__(cls, value: str, variable: str) -> FromEnv:
        text = super().__new__(cls, value)
        text.variable = variable
        return text


@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    variable: str = ""

    @property
    def section(self) -> str:
        return self.path.split(".", 1)[0].split("[", 1)[0]

    def __str__(self) -> str:
        if self.variable:
            return f"{self.variable} {self.message}"
        return f"{self.path}: {self.message}"


class ConfigError(ImproperlyConfigured):
    """Every problem found in one document, one per line."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(problem) for problem in problems))


@dataclass
class Problems:
    found: list[Problem] = field(default_factory=list)

    def add(self, path: str, message: str, raw: Any = None) -> None:
        self.found.append(Problem(path, message, raw.variable if isinstance(raw, FromEnv) else ""))


def _got(raw: Any) -> str:
    return f"got {str(raw)!r}" if isinstance(raw, FromEnv) else f"got {raw!r}"


class Node:
    """One mapping of the document at a dotted path."""

    def __init__(self, path: str, raw: Any, problems: Problems):
        self.path = path
        self.problems = problems
        self.read: set[str] = set()
        self.broken = raw is not None and not isinstance(raw, Mapping)  # already reported
        if raw is None:
            raw = {}
        if self.broken:
            problems.add(path or "(top level)", f"must be a mapping, {_got(raw)}", raw)
            raw = {}
        self.data: Mapping[str, Any] = raw

    # --- plumbing

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else str(key)

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def raw(self, key: str) -> Any:
        self.read.add(key)
        return self.data.get(key)

    def fail(self, key: str, message: str, raw: Any = None) -> None:
        self.problems.add(self.where(key), message, raw)

    def names(self) -> list[str]:
        return [str(key) for key in self.data]

    def node(self, key: str) -> Node:
        return Node(self.where(key), self.raw(key), self.problems)

    def children(self, key: str) -> Iterator[tuple[str, Node]]:
        """(name, node) for each entry of a mapping of mappings (services, webhooks by name, …)."""
        parent = self.node(key)
        for name in parent.names():
            yield name, parent.node(name)
        parent.read.update(parent.names())

    def items(self, key: str) -> Iterator[tuple[int, Node]]:
        """(index, node) for each entry of a list of mappings."""
        raw = self.raw(key)
        if raw is None:
            return
        if not isinstance(raw, list):
            self.fail(key, f"must be a list, {_got(raw)}", raw)
            return
        for index, entry in enumerate(raw):
            yield index, Node(f"{self.where(key)}[{index}]", entry, self.problems)

    def finish(self, *also_known: str) -> None:
        """Report the keys nobody read: a typo must not be silently ignored."""
        for key in self.names():
            if key not in self.read and key not in also_known:
                known = sorted(self.read | set(also_known))
                self.fail(key, f"is not a known key (known here: {', '.join(known) or 'none'})")

    # --- typed reads

    def integer(self, key: str, default: Any, minimum: int | None = None, maximum: int | None = None) -> Any:
        raw = self.raw(key)
        if raw is None:
            return default
        value = _as_integer(raw)
        if value is None:
            self.fail(key, f"must be an integer, {_got(raw)}", raw)
            return default
        if minimum is not None and value < minimum:
            self.fail(key, f"must be an integer >= {minimum}, {_got(raw)}", raw)
            return default
        if maximum is not None and value > maximum:
            self.fail(key, f"must be an integer <= {maximum}, {_got(raw)}", raw)
            return default
        return value

    def number(self, key: str, default: Any, minimum: float, maximum: float = float("inf")) -> Any:
        raw = self.raw(key)
        if raw is None:
            return default
        value = _as_number(raw)
        if value is None or not minimum <= value <= maximum:
            bounds = f"between {minimum:g} and {maximum:g}" if maximum != float("inf") else f">= {minimum:g}"
            self.fail(key, f"must be a number {bounds}, {_got(raw)}", raw)
            return default
        return value

    def boolean(self, key: str, default: bool) -> bool:
        raw = self.raw(key)
        if raw is None:
            return default
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, FromEnv) and raw.strip().lower() in BOOLEAN_WORDS:
            return raw.strip().lower() in TRUE_WORDS
        expected = f"one of {BOOLEAN_WORDS}" if isinstance(raw, FromEnv) else "true or false"
        self.fail(key, f"must be {expected}, {_got(raw)}", raw)
        return default

    def text(self, key: str, default: str = "", *, required: bool = False) -> str:
        raw = self.raw(key)
        if raw is None:
            if required and not self.broken:
                self.fail(key, "is required")
            return default
        if not isinstance(raw, str) or not raw.strip():
            self.fail(key, f"must be a non-empty string, {_got(raw)}", raw)
            return default
        return raw.strip()

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        raw = self.raw(key)
        if raw is None:
            return default
        value = raw.strip().lower() if isinstance(raw, str) else raw
        if value not in choices:
            self.fail(key, f"must be one of {list(choices)}, {_got(raw)}", raw)
            return default
        return value

    def strings(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        """A list of strings; from the environment (or as one string), split at commas and spaces."""
        raw = self.raw(key)
        if raw is None:
            return default
        if isinstance(raw, str):
            return tuple(word for word in re.split(r"[,\s]+", raw) if word)
        if not isinstance(raw, list) or not all(isinstance(item, str) and item.strip() for item in raw):
            self.fail(key, f"must be a list of strings, {_got(raw)}", raw)
            return default
        return tuple(item.strip() for item in raw)

    def string_map(self, key: str) -> dict[str, str]:
        """A mapping of names to scalar values (environment, labels, headers), all as text."""
        node = self.node(key)
        values = {}
        for name in node.names():
            value = node.raw(name)
            if isinstance(value, Mapping | list) or value is None:
                node.fail(name, f"must be a string, number or boolean, {_got(value)}", value)
                continue
            values[name] = str(value).lower() if isinstance(value, bool) else str(value)
        return values


def _as_integer(raw: Any) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, FromEnv) and re.fullmatch(r"\s*[-+]?\d+\s*", raw):
        return int(raw)
    return None


def _as_number(raw: Any) -> float | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | float):
        return float(raw)
    if isinstance(raw, FromEnv):
        try:
            return float(raw)
        except ValueError:
            return None
    return None
