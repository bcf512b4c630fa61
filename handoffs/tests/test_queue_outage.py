"""Starting a handoff while the task queue (Redis) is down: 503 before committing, or 202 and queued later."""

import pytest

from gaiaorch import queues
from handoffs import services
from handoffs.models import Handoff

pytestmark = [pytest.mark.redis, pytest.mark.django_db(transaction=True)]


@pytest.mark.parametrize("outage", ["dead_url", "silent_url"])
def test_it_refuses_with_503_and_commits_nothing_while_the_queue_is_down(
    gaia, hold_gpu, study_client, task_broker, outage
):
    hold_gpu("gaia-core")
    task_broker.point_at(getattr(task_broker, outage))
    response = study_client.post("/handoff/prime-to-study")
    assert response.status_code == 503, response.content
    assert response.json()["error"] == "queue_unavailable"
    assert not Handoff.objects.exists()
    task_broker.point_at(task_broker.live_url)
    assert study_client.post("/handoff/prime-to-study").status_code == 202
    assert task_broker.queued() == 1


def test_it_accepts_a_handoff_whose_task_could_not_be_queued_and_recovery_queues_it(
    gaia, hold_gpu, study_client, task_broker, monkeypatch
):
    """The queue answered the check, then died before the commit's task could reach it."""
    hold_gpu("gaia-core")
    monkeypatch.setattr(queues, "require_broker", lambda: None)
    task_broker.point_at(task_broker.dead_url)
    response = study_client.post("/handoff/prime-to-study")
    assert response.status_code == 202, response.content
    handoff = Handoff.objects.get()
    assert handoff.enqueued_at is None  # marked: not queued
    retry = study_client.post("/handoff/prime-to-study")
    assert (retry.status_code, retry.json()["active_handoff"]) == (409, str(handoff.id))
    assert services.recover() == [handoff.id]  # the queue is still down: it stays marked
    assert Handoff.objects.get().enqueued_at is None
    task_broker.point_at(task_broker.live_url)
    assert services.recover() == [handoff.id]
    assert task_broker.queued() == 1
    assert Handoff.objects.get().enqueued_at is not None
    assert services.recover() == []  # queued once, not again while it waits for a worker
    assert Handoff.objects.count() == 1
