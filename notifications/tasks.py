"""django-q2 entry points: they take ids and call services."""

from __future__ import annotations

from notifications import services


def emit_event(type: str, title: str, message: str = "", data: dict | None = None) -> int:
    """Record a declared event from inside the worker (`manage.py notify event --via-worker`)."""
    return services.record_event(type, title, message, actor="worker", data=data).id
