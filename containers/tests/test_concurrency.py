"""Several web processes asking at once: the database admits exactly one operation."""

import threading

import pytest
from django.db import connection

from containers import services
from containers.models import Operation
from containers.tests.conftest import stack_config
from gaiaorch.errors import Conflict

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def test_it_admits_exactly_one_of_several_simultaneous_operations(settings, monkeypatch):
    settings.GAIAORCH = stack_config("busybox")
    monkeypatch.setattr(services, "require_docker", lambda: None)
    monkeypatch.setattr(services, "enqueue", lambda operation_id: None)
    kinds = ["live_stop", "live_start", "candidate_stop", "candidate_start"] * 2
    barrier = threading.Barrier(len(kinds))
    outcomes: list[str] = []

    def ask(kind: str) -> None:
        barrier.wait()
        try:
            services.request_stack_operation(kind, actor="olivia")
            outcomes.append("accepted")
        except Conflict as refusal:
            outcomes.append(refusal.code)
        finally:
            connection.close()

    threads = [threading.Thread(target=ask, args=(kind,)) for kind in kinds]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(outcomes) == ["accepted"] + ["operation_in_progress"] * (len(kinds) - 1)
    assert Operation.objects.count() == 1
