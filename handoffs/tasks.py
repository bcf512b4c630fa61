"""django-q2 and ticker entry points; each takes ids (or nothing) and calls one service."""

import threading

from django.db import close_old_connections

from handoffs import services

RECLAIM_POLL_SECONDS = 0.5  # how late a due reclaim retry starts at most


def run_handoff(handoff_id: str) -> None:
    services.run(handoff_id)


def watch_tenants() -> None:
    services.watch_tenants()


def retry_reclaims(stop: threading.Event) -> None:
    """The ticker's follower: each retry may wait for a model to load, so it has its own thread."""
    while not stop.wait(RECLAIM_POLL_SECONDS):
        try:
            services.retry_reclaims()
        finally:
            close_old_connections()
