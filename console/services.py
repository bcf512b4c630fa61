"""The coordinator's own answers, over every app: readiness (/ready), the summary (GET /status)
and the endpoint index (GET /)."""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from containers import services as containers
from gaiaorch import attribution, telemetry
from gaiaorch import config as gaiaorch_config
from gaiaorch.auth import tokenless_warning
from gaiaorch.models import WorkerHeartbeat
from gaiaorch.services import worker_heartbeat_age
from handoffs import services as handoffs
from leases import services as leases

UNLISTED_PREFIXES = ("admin/", "static/")


# --- readiness -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str
    figures: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "detail": self.detail, **self.figures}


def check_database() -> Check:
    figures = {"vendor": connection.vendor}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as exc:
        return Check(False, f"the database refused a query: {exc}", figures)
    problem = database_write_problem()
    if problem:
        return Check(False, problem, figures)
    return Check(True, "answers queries and accepts writes", figures)


# An SQLite writer waits this long for the lock when probing, not the connection's busy timeout.
WRITE_PROBE_BUSY_MS = 500


def database_write_problem() -> str:
    """Why the database takes no write now ("" when it does), by a write that changes no row."""
    try:
        with _short_busy_timeout():
            WorkerHeartbeat.objects.filter(pk__lt=0).update(consumed_by="")
    except DatabaseError as exc:
        text = str(exc)
        if "locked" in text or "busy" in text:
            return f"the database is locked by another writer (busy), so nothing can be written now: {text}"
        if "read-only" in text or "readonly" in text:
            return f"the database is read-only, so nothing can be written: {text}"
        return f"the database refused a write: {text}"
    return ""


@contextmanager
def _short_busy_timeout():
    if connection.vendor != "sqlite":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA busy_timeout")
        configured = cursor.fetchone()[0]
        cursor.execute(f"PRAGMA busy_timeout = {WRITE_PROBE_BUSY_MS}")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"PRAGMA busy_timeout = {int(configured)}")


def check_worker() -> Check:
    limit = settings.WORKER_HEARTBEAT_MAX_AGE_SECONDS
    row = WorkerHeartbeat.objects.filter(pk=1).first()
    age = worker_heartbeat_age()
    figures = {"heartbeat_age_seconds": round(age, 1) if age is not None else None, "max_age_seconds": limit}
    if age is not None and age <= limit:
        return Check(True, "the worker consumes tasks", figures)
    blocked = database_write_problem()
    if blocked:
        # Neither the ticker nor the worker can stamp a heartbeat: blame the database, not them.
        return Check(False, f"heartbeats cannot be stamped: {blocked}", figures)
    if row is None or row.enqueued_at is None:
        return Check(
            False, "no heartbeat task was ever enqueued: is the ticker (manage.py ticker) running?", figures
        )
    if (timezone.now() - row.enqueued_at).total_seconds() > limit:
        return Check(False, "the ticker stopped enqueuing heartbeats: is manage.py ticker running?", figures)
    return Check(
        False, "heartbeat tasks are not consumed: is the worker (manage.py qcluster) running?", figures
    )


def check_docker() -> Check:
    available, error = containers.docker_availability(gaiaorch_config.current())
    return Check(available, "reachable" if available else error, {})


def check_telemetry() -> Check:
    sampled = telemetry.sample()
    figures = {
        "backend": sampled.backend,
        "configured_backend": settings.GPU_BACKEND,
        "gpus": len(sampled.gpus),
    }
    if sampled.backend == "none":
        # Off (configured so, or `auto` found no NVML, with its reason): handoffs then verify only
        # by stopped containers, where that is configured.
        return Check(True, sampled.reason, figures)
    if not sampled.available:
        return Check(False, sampled.reason, figures)
    owners = attribution.current(sampled)
    figures["attribution"] = {
        gpu.gpu: {"available": gpu.available, "reason": gpu.reason} for gpu in owners.gpus
    }
    blind = [gpu for gpu in owners.gpus if not gpu.available]
    detail = "samples GPU memory and who holds it"
    if blind:
        # Still ready: releases are then judged by the weaker aggregate rule (docs/handoffs.md).
        detail = "samples GPU memory; attribution unavailable: " + "; ".join(gpu.reason for gpu in blind)
    return Check(True, detail, figures)


def check_rollbacks() -> Check:
    """Not ready while a rollback left a source without its GPU memory, unacknowledged."""
    open_rollbacks = handoffs.open_rollbacks()
    figures = {"incomplete": [row.as_dict() for row in open_rollbacks]}
    if not open_rollbacks:
        return Check(True, "no incomplete rollback", figures)
    first = open_rollbacks[0]
    retried = f"reclaim retried, {first.attempts} attempts so far" if first.retry_reclaim else "not retried"
    detail = (
        f"{len(open_rollbacks)} incomplete rollback{'s' if len(open_rollbacks) > 1 else ''}: handoff "
        f"{first.handoff_id} ({first.handoff.type}) left {first.source} without its GPU memory on GPU "
        f"{first.gpu_index} ({first.problems[0]['detail'] if first.problems else 'see its error'}); "
        f"{retried}; acknowledge it with the operator action acknowledge-rollback once handled"
    )
    return Check(False, detail, figures)


CHECKS = {
    "database": check_database,
    "worker": check_worker,
    "docker": check_docker,
    "telemetry": check_telemetry,
    "rollbacks": check_rollbacks,
}


def readiness() -> dict[str, Any]:
    """Every check with its reason; ready only when all pass. Warnings never make it unready."""
    results = {name: _run_check(check) for name, check in CHECKS.items()}
    return {
        "ready": all(result.ok for result in results.values()),
        "checks": {name: result.as_dict() for name, result in results.items()},
        "warnings": [warning for warning in (tokenless_warning(),) if warning],
        "checked_at": timezone.now(),
    }


def _run_check(check) -> Check:
    try:
        return check()
    except DatabaseError as exc:  # every check but telemetry reads the database
        return Check(False, f"the database refused a query: {exc}", {})


# --- summary ---------------------------------------------------------------------------------


def overview() -> dict[str, Any]:
    """The seed's GET /status: {service, status, gpu, containers, active_handoff, last_updated}."""
    gpu = leases.seed_gpu_status()
    stacks = containers.seed_status()
    problems = _problems(gpu, stacks)
    return {
        "service": settings.SERVICE_NAME,
        "version": settings.VERSION,
        "status": "degraded" if problems else "healthy",
        "problems": problems,
        "gpu": gpu,
        "containers": stacks,
        "active_handoff": handoffs.active_status(),
        "last_updated": timezone.now(),
    }


def _problems(gpu: dict[str, Any], stacks: dict[str, Any]) -> list[str]:
    problems = []
    if gpu["telemetry_backend"] != "none" and not gpu["telemetry_available"]:
        problems.append(f"GPU telemetry is unavailable: {gpu['telemetry_reason']}")
    if not stacks["docker_available"]:
        problems.append(f"Docker is unavailable: {stacks['docker_error']}")
    for row in handoffs.open_rollbacks():
        problems.append(
            f"the rollback of handoff {row.handoff_id} left {row.source} without its GPU memory on GPU "
            f"{row.gpu_index}: {row.last_error or (row.problems[0]['detail'] if row.problems else '')}"
        )
    for entry in gpu["gpus"]:
        for tenant in entry["tenants"]:
            problems.append(f"GPU {entry['gpu']}: {tenant['describe']}, outside any service")
    return problems


def endpoint_index() -> list[dict[str, Any]]:
    """Every URL the coordinator answers (admin and static files aside), with its methods."""
    return [
        {"path": path, "methods": methods, "name": name}
        for path, methods, name in walk_urls(get_resolver().url_patterns)
        if not path.startswith(tuple("/" + prefix for prefix in UNLISTED_PREFIXES))
    ]


def walk_urls(patterns, prefix: str = "/"):
    """(path, methods, name) of every route, methods read from the view (DRF or plain)."""
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from walk_urls(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern) and "(?P<format>" not in route:
            yield openapi_path(route), view_methods(pattern.callback), pattern.name


def openapi_path(route: str) -> str:
    """`/api/leases/(?P<pk>[^/.]+)/` and `/handoff/<str:handoff_id>/status` as `{pk}`, `{handoff_id}`
    (a group's own pattern may hold groups: `(?P<service>(?!status$)[^/.]+)`)."""
    while (group := re.search(r"\(\?P<(\w+)>", route)) is not None:
        depth, end = 1, group.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(route[end], 0)
            end += 1
        route = f"{route[: group.start()]}{{{group.group(1)}}}{route[end:]}"
    route = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)
    return route.replace("^", "").replace("$", "")


def view_methods(callback) -> list[str]:
    actions = getattr(callback, "actions", None)  # a DRF viewset route
    if actions:
        return sorted(method.upper() for method in actions)
    view_class = getattr(callback, "cls", None) or getattr(callback, "view_class", None)
    if view_class is not None:
        return sorted(
            method.upper()
            for method in view_class.http_method_names
            if method != "options" and hasattr(view_class, method) and method != "head"
        )
    return sorted(getattr(callback, "allowed_methods", ["GET"]))
