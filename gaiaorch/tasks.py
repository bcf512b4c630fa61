"""django-q2 entry points of the coordinator itself."""

from gaiaorch import services


def stamp_worker_heartbeat() -> None:
    services.stamp_worker_heartbeat()
