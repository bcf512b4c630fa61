"""django-q2 and ticker entry points; each takes ids (or nothing) and calls one service."""

from handoffs import services


def run_handoff(handoff_id: str) -> None:
    services.run(handoff_id)


def sample_idle_baselines() -> None:
    services.sample_baselines()
