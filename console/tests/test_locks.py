"""Every lock in the code says why it is there: a comment on its line or just above its statement.

A lock is a row lock (`select_for_update`), a PostgreSQL advisory lock (`pg_advisory_*`), or a
thread or event-loop lock (`threading.Lock`/`RLock`, `asyncio.Lock`). Every module of every layer
counts, tests and migrations aside; the sources are read with `ast`, nothing is imported.
"""

from __future__ import annotations

import ast

from console.tests.test_layers import LAYERS, ROOT, modules

LOCK_CALLS = {"select_for_update", "Lock", "RLock"}


def is_lock(node: ast.AST) -> bool:
    if isinstance(node, ast.Call):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        return name in LOCK_CALLS
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and "pg_advisory" in node.value


def statements(tree: ast.AST) -> list[ast.stmt]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.stmt) and not hasattr(node, "body")]


def unexplained_locks(source: str) -> list[int]:
    """Lines of locks with no comment on any line of their statement or on the line above it."""
    lines = source.splitlines()
    found = []
    for statement in statements(ast.parse(source)):
        locks = [node.lineno for node in ast.walk(statement) if isinstance(node, ast.expr) and is_lock(node)]
        if not locks:
            continue
        first, last = statement.lineno, statement.end_lineno or statement.lineno
        above = lines[first - 2].strip() if first > 1 else ""
        own = any("#" in line for line in lines[first - 1 : last])  # a comment on its own lines
        if not (own or above.startswith("#")):
            found.extend(locks)
    return found


def test_it_finds_a_why_comment_at_every_lock():
    missing = [
        f"{path.relative_to(ROOT)}:{line}"
        for layer in [*LAYERS, "gaiaorch_client"]
        for path in (modules(layer) if layer in LAYERS else sorted((ROOT / layer).rglob("*.py")))
        for line in unexplained_locks(path.read_text())
    ]
    assert missing == [], "locks without a comment saying why: " + ", ".join(missing)


def test_it_finds_the_locks_and_their_comments():
    assert unexplained_locks("row = Gpu.objects.select_for_update().get(pk=1)\n") == [1]
    assert (
        unexplained_locks("# why: one writer at a time\nrow = Gpu.objects.select_for_update().get()\n") == []
    )
    assert unexplained_locks("lock = threading.Lock()  # why: shared cache\n") == []
    assert unexplained_locks('cursor.execute("SELECT pg_advisory_xact_lock(%s)", [1])\n') == [1]
    assert unexplained_locks("self._lock = asyncio.Lock()\n") == [1]
    multi = "burst = (\n    Burst.objects.select_for_update()\n    .first()\n)\n"
    assert unexplained_locks(multi) == [2]
    assert unexplained_locks("# why: the ticker races it\n" + multi) == []
