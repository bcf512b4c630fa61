from datetime import timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from gaiaorch import config
from notifications import dispatch, services
from notifications.models import DeliveryStatus, Event, WebhookDelivery
from notifications.services import attempt_delivery, dispatch_due_deliveries, record_event
from notifications.tests.receiver import WebhookReceiver


@pytest.fixture
def gaia_web(notifications_config):
    """gaia-web's notification endpoint, configured as a webhook for handoff and notification events."""

    def configure(receiver: WebhookReceiver, **options):
        hook = {"name": "gaia-web", "url": receiver.url, "types": ["handoff.*", "notification.*"]}
        hook["headers"] = {"X-Gaia-Secret": "s3cret"}
        notifications_config(webhooks=[{**hook, **options}], retry_base_seconds=10)

    return configure


@pytest.fixture
def queued(monkeypatch):
    """Attempts handed to the worker, as (delivery id, attempt number)."""
    calls = []
    monkeypatch.setattr(
        dispatch, "enqueue_delivery", lambda delivery_id, attempt: calls.append((delivery_id, attempt))
    )
    return calls


def test_it_writes_one_outbox_row_per_matching_webhook(db, gaia_web):
    with WebhookReceiver() as receiver:
        gaia_web(receiver)
        handoff = record_event("handoff.completed", "Prime to Study completed")
        record_event("lease.granted", "not wanted by gaia-web")
    [delivery] = WebhookDelivery.objects.all()
    assert (delivery.event, delivery.webhook, delivery.url) == (handoff, "gaia-web", receiver.url)
    assert delivery.status == DeliveryStatus.PENDING and delivery.attempts == 0


def test_it_queues_the_first_attempt_when_the_event_commits(
    db, gaia_web, queued, django_capture_on_commit_callbacks
):
    with WebhookReceiver() as receiver, django_capture_on_commit_callbacks(execute=True):
        gaia_web(receiver)
        record_event("handoff.started", "started")
    assert queued == [(WebhookDelivery.objects.get().id, 1)]


def test_it_delivers_the_notification_with_the_configured_headers(db, gaia_web):
    with WebhookReceiver() as receiver:
        gaia_web(receiver)
        event = record_event("notification.oracle_fallback", "Cloud model answering", data={"count": 1})
        delivery = attempt_delivery(WebhookDelivery.objects.get().id, 1)
        [request] = receiver.requests
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.delivered_at is not None
    assert request["body"]["id"] == event.id and request["body"]["notification_type"] == event.type
    assert request["body"]["data"] == {"count": 1}
    assert request["headers"]["X-Gaia-Secret"] == "s3cret"
    assert request["headers"]["X-Gaiaorch-Delivery"] == str(delivery.id)
    assert delivery.attempt_log[0]["status_code"] == 200


def test_it_schedules_a_retry_with_exponential_backoff(db, gaia_web):
    with WebhookReceiver([503, 500]) as receiver:
        gaia_web(receiver)
        record_event("handoff.failed", "failed")
        delivery_id = WebhookDelivery.objects.get().id
        before = timezone.now()
        first = attempt_delivery(delivery_id, 1)
        second = attempt_delivery(delivery_id, 2)
    assert (first.status, first.attempts, first.last_status_code) == (DeliveryStatus.PENDING, 1, 503)
    assert before + timedelta(seconds=9) < first.next_attempt_at < before + timedelta(seconds=12)
    assert second.next_attempt_at - timezone.now() > timedelta(seconds=19)
    assert [a["status_code"] for a in second.attempt_log] == [503, 500]
    assert services.retry_delay(20) == config.current().notifications.retry_max_seconds


def test_it_runs_each_attempt_once_when_its_task_is_queued_twice(db, gaia_web):
    with WebhookReceiver() as receiver:
        gaia_web(receiver)
        record_event("handoff.started", "started")
        delivery_id = WebhookDelivery.objects.get().id
        assert attempt_delivery(delivery_id, 1) is not None
        assert attempt_delivery(delivery_id, 1) is None
        assert len(receiver.requests) == 1


def test_it_gives_up_after_the_last_attempt_and_says_so(db, gaia_web):
    with WebhookReceiver([500, 500]) as receiver:
        gaia_web(receiver, max_attempts=2)
        record_event("handoff.started", "started")
        delivery_id = WebhookDelivery.objects.get().id
        attempt_delivery(delivery_id, 1)
        delivery = attempt_delivery(delivery_id, 2)
    assert delivery.status == DeliveryStatus.FAILED and delivery.next_attempt_at is None
    gave_up = Event.objects.get(type="webhook.gave_up")
    assert gave_up.data == {"delivery_id": delivery_id, "event_id": delivery.event_id, "attempts": 2}
    assert WebhookDelivery.objects.count() == 1  # webhook events are never sent to webhooks


def test_it_records_a_receiver_that_hangs_as_a_failed_attempt(db, gaia_web):
    with WebhookReceiver(hang_seconds=2) as receiver:
        gaia_web(receiver, timeout_seconds=0.2)
        record_event("handoff.started", "started")
        delivery = attempt_delivery(WebhookDelivery.objects.get().id, 1)
    assert delivery.status == DeliveryStatus.PENDING and delivery.last_status_code is None
    assert "Timeout" in delivery.last_error
    assert delivery.attempt_log[0]["duration_ms"] < 1500


def test_it_gives_up_on_a_webhook_removed_from_the_configuration(db, gaia_web, notifications_config):
    with WebhookReceiver() as receiver:
        gaia_web(receiver)
        record_event("handoff.started", "started")
    notifications_config(webhooks=[])
    delivery = attempt_delivery(WebhookDelivery.objects.get().id, 1)
    assert delivery.status == DeliveryStatus.FAILED and "no longer configured" in delivery.last_error


def test_it_dispatches_each_due_retry_once(db, gaia_web, queued):
    with WebhookReceiver([500]) as receiver:
        gaia_web(receiver)
        record_event("handoff.started", "started")
        delivery_id = WebhookDelivery.objects.get().id
        assert dispatch_due_deliveries() == 0  # claimed for the on-commit attempt
        attempt_delivery(delivery_id, 1)
        WebhookDelivery.objects.update(next_attempt_at=timezone.now())
        assert dispatch_due_deliveries() == 1
        assert dispatch_due_deliveries() == 0
    assert queued == [(delivery_id, 2)]


def test_it_dispatches_a_first_attempt_whose_task_was_lost(db, gaia_web, queued):
    with WebhookReceiver() as receiver:
        gaia_web(receiver)
        record_event("handoff.started", "started")
    WebhookDelivery.objects.update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    assert dispatch_due_deliveries() == 1
    assert queued == [(WebhookDelivery.objects.get().id, 1)]


@pytest.mark.parametrize(
    "hooks",
    [
        [{"types": ["x"]}],
        [{"url": "ftp://example"}],
        [{"url": "http://127.0.0.1:1/a", "timeout_seconds": "soon"}],
        [{"url": "http://127.0.0.1:1/a"}, {"url": "http://127.0.0.1:1/a"}],
        ["http://127.0.0.1:1/a"],
    ],
)
def test_it_refuses_a_broken_webhook_configuration(notifications_config, hooks):
    notifications_config(webhooks=hooks)
    with pytest.raises(ImproperlyConfigured):
        config.current()


def test_it_shows_deliveries_read_only_in_the_admin(client, django_user_model, gaia_web):
    with WebhookReceiver() as receiver:
        gaia_web(receiver)
        record_event("handoff.started", "Prime to Study started")
    client.force_login(django_user_model.objects.create_superuser("root", password="x" * 12))
    listing = client.get(
        "/admin/notifications/webhookdelivery/?status__exact=pending&event__type=handoff.started"
    )
    assert listing.status_code == 200 and b"gaia-web" in listing.content
    delivery = WebhookDelivery.objects.get()
    assert client.get(f"/admin/notifications/webhookdelivery/{delivery.id}/change/").status_code == 200
    assert client.post(f"/admin/notifications/webhookdelivery/{delivery.id}/delete/").status_code == 403
    assert client.get("/admin/notifications/oraclefallbackburst/").status_code == 200


def test_it_lets_an_operator_retry_a_failed_delivery_once_more(client, operator, gaia_web, queued):
    with WebhookReceiver([500, 200]) as receiver:
        gaia_web(receiver, max_attempts=1)
        record_event("handoff.started", "started")
        delivery_id = WebhookDelivery.objects.get().id
        assert attempt_delivery(delivery_id, 1).status == DeliveryStatus.FAILED
        operator.is_superuser = True
        operator.save()
        client.force_login(operator)
        answer = client.post(
            "/admin/notifications/webhookdelivery/",
            {"action": "retry_failed", "_selected_action": [delivery_id]},
            follow=True,
        )
        assert b"1 failed deliveries will be retried now." in answer.content
        assert dispatch_due_deliveries() == 1 and queued == [(delivery_id, 2)]
        assert attempt_delivery(delivery_id, 2).status == DeliveryStatus.DELIVERED
    assert Event.objects.get(type="webhook.retried").actor == "olivia"
