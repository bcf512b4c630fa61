from django_q.conf import Conf

from gaiaorch import services, ticker
from gaiaorch.models import WorkerHeartbeat


def test_it_answers_health_without_auth(anonymous_client, db):
    response = anonymous_client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert body["service"] == "gaia-orchestrator"
    assert "version" in body and "timestamp" in body


def test_it_does_not_redirect_paths_without_a_trailing_slash(anonymous_client, db):
    response = anonymous_client.get("/health/")
    assert response.status_code == 404


def test_it_stamps_the_heartbeat_through_a_worker_task(monkeypatch, db):
    monkeypatch.setattr(Conf, "SYNC", True)  # the task runs in this process, as a worker would run it
    ticker.PERIODIC["gaiaorch.worker_heartbeat"].func()
    beat = WorkerHeartbeat.objects.get(pk=1)
    assert beat.enqueued_at <= beat.consumed_at
    assert services.worker_heartbeat_age() < 5


def test_it_keeps_health_a_cheap_liveness_check(anonymous_client, django_assert_num_queries, db):
    with django_assert_num_queries(0):
        assert anonymous_client.get("/health").status_code == 200
