"""Requesting a container operation while the task queue (Redis) is down: 503, or 202 and queued later."""

import pytest

from containers import services
from containers.models import Operation
from containers.tests.conftest import stack_config
from gaiaorch import queues

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def docker_answers(monkeypatch, settings):
    settings.GAIAORCH = stack_config("busybox", network="gaia-test-net")
    monkeypatch.setattr(services, "require_docker", lambda: services.docker_reachable(reachable=True))


@pytest.mark.parametrize("outage", ["dead_url", "silent_url"])
def test_it_refuses_with_503_and_commits_nothing_while_the_queue_is_down(
    docker_answers, operator_client, task_broker, outage
):
    task_broker.point_at(getattr(task_broker, outage))
    response = operator_client.post("/containers/live/stop")
    assert response.status_code == 503, response.content
    assert response.json()["error"] == "queue_unavailable"
    assert not Operation.objects.exists()
    task_broker.point_at(task_broker.live_url)
    assert operator_client.post("/containers/live/stop").status_code == 202
    assert task_broker.queued() == 1


def test_it_accepts_an_operation_whose_task_could_not_be_queued_and_recovery_queues_it(
    docker_answers, operator_client, task_broker, monkeypatch
):
    monkeypatch.setattr(queues, "require_broker", lambda: None)  # answered the check, then died
    task_broker.point_at(task_broker.dead_url)
    response = operator_client.post("/containers/live/stop")
    assert response.status_code == 202, response.content
    operation = Operation.objects.get()
    assert operation.attempts == 0  # handed to no worker yet
    retry = operator_client.post("/containers/live/stop")
    assert (retry.status_code, retry.json()["operation_id"]) == (409, operation.id)
    assert services.recover_stale_operations() == [operation.id]  # still down: stays unqueued
    assert Operation.objects.get().attempts == 0
    task_broker.point_at(task_broker.live_url)
    assert services.recover_stale_operations() == [operation.id]
    assert task_broker.queued() == 1
    assert Operation.objects.get().attempts == 1  # the first hand-over, not a resume
    assert services.recover_stale_operations() == []
    assert Operation.objects.count() == 1
