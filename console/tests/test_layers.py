"""The layers, checked over the import graph: no module imports from a layer above its own.

gaiaorch (base) → notifications → leases → containers → handoffs → console (top), as
docs/DEVELOPING.md describes them. Every module of every layer counts, tests and migrations aside,
and so does every import in it, those inside functions included. The sources are read with `ast`;
nothing is imported.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings

LAYERS = ["gaiaorch", "notifications", "leases", "containers", "handoffs", "console"]
ROOT = Path(__file__).resolve().parents[2]


def modules(layer: str) -> list[Path]:
    return [
        path
        for path in sorted((ROOT / layer).rglob("*.py"))
        if not {"tests", "migrations"} & set(path.relative_to(ROOT).parts)
    ]


def imports(source: str, module: str) -> Iterator[tuple[int, str]]:
    """(line, imported module) of every import statement in `source`, relative ones resolved."""
    package = module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            yield node.lineno, ".".join([*base, *([node.module] if node.module else [])])


def layer_of(module: str) -> int | None:
    top = module.split(".")[0]
    return LAYERS.index(top) if top in LAYERS else None


def upward_imports(source: str, module: str) -> list[str]:
    own = layer_of(module)
    return [
        f"{module}:{line} imports {name} ({LAYERS[layer_of(name)]} is above {LAYERS[own]})"  # type: ignore[index]
        for line, name in imports(source, module)
        if (layer_of(name) or 0) > own  # type: ignore[operator]
    ]


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def test_it_finds_no_module_importing_from_a_layer_above_its_own():
    violations = [
        found
        for layer in LAYERS
        for path in modules(layer)
        for found in upward_imports(path.read_text(), module_name(path))
    ]
    assert violations == [], "\n".join(violations)


def test_it_lists_every_project_app_in_layer_order():
    """A new app must take its place in LAYERS (and in docs/DEVELOPING.md), in INSTALLED_APPS order."""
    project_apps = [app for app in settings.INSTALLED_APPS if (ROOT / app / "apps.py").exists()]
    assert project_apps == LAYERS


def test_it_reads_every_layer_and_the_imports_inside_functions():
    """The graph is not empty, and the lazy import of handoffs/strategies.py (containers) is in it."""
    assert all(modules(layer) for layer in LAYERS)
    strategies = ROOT / "handoffs" / "strategies.py"
    imported = {name for _, name in imports(strategies.read_text(), "handoffs.strategies")}
    assert "containers" in imported


def test_it_catches_an_import_from_above_inside_a_function():
    lazy = "def status():\n    from handoffs.services import active_status\n"
    assert upward_imports(lazy, "leases.services") == [
        "leases.services:2 imports handoffs.services (handoffs is above leases)"
    ]
    assert upward_imports("import leases.models\n", "handoffs.services") == []


def test_it_resolves_relative_imports_within_their_package():
    def resolved(source: str, module: str) -> list[str]:
        return [name for _, name in imports(source, module)]

    assert resolved("from ..models import Gpu\n", "leases.api.views") == ["leases.models"]
    assert resolved("from . import views\n", "console.urls") == ["console"]
