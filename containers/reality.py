"""Keeping the reality rows true: Docker's event stream, a periodic full reconcile, and pings.

Both run in the ticker process (`manage.py ticker`), registered in Config.ready().
The follower reads Docker's container events in short windows (so it notices a stop request
quickly), keeps only the events of managed containers and re-inspects the container concerned.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Any

from django.utils import timezone

from containers import services
from containers.engine import DockerUnavailable, Engine, observe, service_of
from gaiaorch import config as gaiaorch_config

logger = logging.getLogger(__name__)

EVENT_WINDOW_SECONDS = 5
INTERESTING = {"create", "start", "restart", "die", "stop", "kill", "pause", "unpause", "destroy",
               "oom", "rename", "health_status", "update"}  # fmt: skip


def reconcile() -> None:
    """Inspect every managed container and store what Docker says (absent when there is none)."""
    config = gaiaorch_config.current()
    try:
        with Engine() as engine:
            found = engine.managed(config)
    except DockerUnavailable as exc:
        services.docker_reachable(reachable=False, error=exc.detail)
        return
    services.docker_reachable(reachable=True)
    for service in config.containers():
        services.record_observation(service, observe(found.get(service.name)))


def apply_event(engine: Engine, event: dict[str, Any]) -> bool:
    """One Docker event; True when it concerned a managed container."""
    if event.get("Action", "").split(":")[0] not in INTERESTING:
        return False
    config = gaiaorch_config.current()
    actor = event.get("Actor") or {}
    attributes = actor.get("Attributes") or {}
    service = service_of(config, attributes.get("name", ""), attributes)
    if service is None:
        return False
    services.record_observation(service, observe(engine.inspect(actor.get("ID", ""))))
    return True


def follow(stop: threading.Event) -> None:
    """Follow Docker's event stream until `stop` is set; raises when Docker goes away."""
    try:
        with Engine(timeout=EVENT_WINDOW_SECONDS + 10) as engine:
            engine.ping()
            services.docker_reachable(reachable=True)
            reconcile()  # whatever happened while nobody was listening
            since = timezone.now() - timedelta(seconds=1)
            while not stop.is_set():
                until = timezone.now() + timedelta(seconds=EVENT_WINDOW_SECONDS)
                for event in engine.events(since=since, until=until):
                    apply_event(engine, event)
                    if stop.is_set():
                        return
                since = until - timedelta(seconds=1)  # overlap: a repeated event is harmless
    except DockerUnavailable as exc:
        services.docker_reachable(reachable=False, error=exc.detail)
        raise
