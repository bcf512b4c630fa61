import importlib
import json
import logging
from datetime import timedelta

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone

from gaiaorch import config
from gaiaorch.redaction import public_webhook_name
from notifications import services
from notifications.models import DeliveryStatus, Event, WebhookDelivery
from notifications.services import attempt_delivery, claim_due_deliveries
from notifications.tests.receiver import WebhookReceiver
from notifications.tests.samples import record_sample as record_event
from notifications.tests.samples import sample

SLOTS = 4


def claim(free: int = SLOTS, in_flight: dict | None = None) -> list[tuple[int, int]]:
    """What the delivery pump would take now, as (delivery id, attempt number)."""
    return [
        (delivery_id, attempt)
        for delivery_id, attempt, _ in claim_due_deliveries(free, in_flight or {}, SLOTS - 1)
    ]


@pytest.fixture
def gaia_web(notifications_config):
    """gaia-web's notification endpoint, configured as a webhook for handoff and notification events."""

    def configure(receiver: WebhookReceiver, **options):
        hook: dict = {"name": "gaia-web", "url": receiver.url, "types": ["handoff.*", "notification.*"]}
        hook["headers"] = {"X-Gaia-Secret": "s3cret"}
        notifications_config(webhooks=[{**hook, **options}], retry_base_seconds=10)

    return configure


def test_it_writes_one_outbox_row_per_matching_webhook(db, gaia_web):
    with WebhookReceiver() as receiver:
        gaia_web(receiver)
        handoff = record_event("handoff.completed", "Prime to Study completed")
        record_event("lease.granted", "not wanted by gaia-web")
    [delivery] = WebhookDelivery.objects.all()
    origin = receiver.url.removesuffix("/api/notifications")
    assert (delivery.event, delivery.webhook, delivery.url) == (handoff, "gaia-web", origin)
    assert delivery.status == DeliveryStatus.PENDING and delivery.attempts == 0


def test_it_makes_the_first_attempt_due_when_the_event_is_written(db, gaia_web):
    with WebhookReceiver() as receiver:
        gaia_web(receiver)
        record_event("handoff.started", "started")
    assert claim() == [(WebhookDelivery.objects.get().id, 1)]
    assert claim() == []  # claimed: no second pump takes it while the attempt runs


def test_it_delivers_the_notification_with_the_configured_headers(db, gaia_web):
    with WebhookReceiver() as receiver:
        gaia_web(receiver)
        event = record_event("notification.oracle_fallback", "Cloud model answering", data={"count": 1})
        delivery = attempt_delivery(WebhookDelivery.objects.get().id, 1)
        [request] = receiver.requests
    assert delivery.status == DeliveryStatus.DELIVERED and delivery.delivered_at is not None
    assert request["body"]["id"] == event.id and request["body"]["type"] == event.type
    assert request["body"]["notification_type"] == "oracle_fallback"
    assert request["headers"]["X-Gaiaorch-Event-Type"] == "notification.oracle_fallback"
    assert request["body"]["data"] == sample("notification.oracle_fallback", count=1)
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


def test_it_claims_each_due_retry_once(db, gaia_web):
    with WebhookReceiver([500]) as receiver:
        gaia_web(receiver)
        record_event("handoff.started", "started")
        delivery_id = WebhookDelivery.objects.get().id
        assert claim() == [(delivery_id, 1)]
        attempt_delivery(delivery_id, 1)
        assert claim() == []  # backing off
        WebhookDelivery.objects.update(next_attempt_at=timezone.now())
        assert claim() == [(delivery_id, 2)]
        assert claim() == []


def test_it_makes_an_attempt_again_once_its_claim_lapses(db, gaia_web):
    """The ticker died during the attempt: the claim window passes and the attempt is made again."""
    with WebhookReceiver() as receiver:
        gaia_web(receiver)
        record_event("handoff.started", "started")
    assert claim() == [(WebhookDelivery.objects.get().id, 1)]
    WebhookDelivery.objects.update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    assert claim() == [(WebhookDelivery.objects.get().id, 1)]


def test_it_never_gives_one_webhook_the_last_free_slot(db, notifications_config):
    with WebhookReceiver(hang_seconds=5) as dead, WebhookReceiver() as alive:
        notifications_config(
            webhooks=[
                {"name": "dead", "url": dead.url},
                {"name": "alive", "url": alive.url, "types": ["x.*"]},
            ]
        )
        for n in range(10):
            record_event("test.ping", f"burst {n}")
        record_event("x.ping", "for the live one")
        taken = claim_due_deliveries(SLOTS, {}, SLOTS - 1)
        assert [webhook for _, _, webhook in taken] == ["dead", "dead", "dead", "alive"]
        assert claim_due_deliveries(1, {"dead": 3}, SLOTS - 1) == []  # only dead ones are due


def test_it_bounds_an_attempt_by_its_timeout_even_when_the_answer_trickles(db, gaia_web):
    """Each byte arrives within the read timeout, so only a deadline on the whole attempt ends it."""
    with WebhookReceiver(trickle_seconds=0.05) as receiver:
        gaia_web(receiver, timeout_seconds=0.5)
        record_event("handoff.started", "started")
        delivery = attempt_delivery(WebhookDelivery.objects.get().id, 1)
    assert delivery.status == DeliveryStatus.PENDING and delivery.last_status_code is None
    assert "within 0.5 s" in delivery.last_error
    assert delivery.attempt_log[0]["duration_ms"] < 1000


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


def test_it_lets_an_operator_retry_a_failed_delivery_once_more(client, operator, gaia_web):
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
        assert claim() == [(delivery_id, 2)]
        assert attempt_delivery(delivery_id, 2).status == DeliveryStatus.DELIVERED
    assert Event.objects.get(type="webhook.retried").actor == "olivia"


SLACK_STYLE = "https://hooks.slack.com/services/T0000/B0000/s3cr3tPath?token=s3cr3tQuery"


def test_it_names_an_unnamed_webhook_by_its_scheme_host_and_port_only(notifications_config):
    other = "https://hooks.slack.com/services/T0000/B0000/another"
    notifications_config(
        webhooks=[{"url": SLACK_STYLE}, {"url": other}, {"url": "http://user:pw@10.0.0.5:8080/x"}]
    )
    first, second, third = (hook.name for hook in config.current().notifications.webhooks)
    assert first.startswith("https://hooks.slack.com ") and "s3cr3t" not in first
    assert second.startswith("https://hooks.slack.com ") and second != first  # names stay unique
    assert third.startswith("http://10.0.0.5:8080 ") and "pw" not in third and "/x" not in third
    notifications_config(webhooks=[{"url": SLACK_STYLE}])
    assert config.current().notifications.webhooks[0].name == first  # stable across reads


def test_it_never_shows_the_path_or_query_of_an_unnamed_webhook(
    client, operator, notifications_config, caplog, settings
):
    """Metrics, events, the API, the admin and the log: none shows what follows the host."""
    operator.is_superuser = True
    operator.save()
    caplog.set_level(logging.DEBUG)
    with WebhookReceiver([500]) as receiver:
        secret_url = receiver.url + "/s3cr3tPath?token=s3cr3tQuery"
        notifications_config(webhooks=[{"url": secret_url, "max_attempts": 1}])
        record_event("handoff.started", "started")
        delivery = attempt_delivery(WebhookDelivery.objects.get().id, 1)
    assert delivery.status == DeliveryStatus.FAILED
    client.force_login(operator)
    pages = [
        client.get("/metrics").content.decode(),
        client.get("/api/events/").content.decode(),
        client.get("/admin/notifications/webhookdelivery/").content.decode(),
        client.get(f"/admin/notifications/webhookdelivery/{delivery.id}/change/").content.decode(),
        client.get("/admin/notifications/event/").content.decode(),
        json.dumps(list(Event.objects.values()), default=str),
        json.dumps(list(WebhookDelivery.objects.values()), default=str),
        caplog.text,
    ]
    assert "gave up" in pages[1]
    for page in pages:
        assert "s3cr3t" not in page and "/api/notifications" not in page


def test_it_keeps_a_transport_error_free_of_the_webhooks_path(db, notifications_config):
    unreachable = "http://127.0.0.1:9/s3cr3tPath"
    notifications_config(webhooks=[{"url": unreachable, "timeout_seconds": 0.5}])
    record_event("handoff.started", "started")
    delivery = attempt_delivery(WebhookDelivery.objects.get().id, 1)
    assert delivery.last_status_code is None and delivery.last_error
    assert "s3cr3t" not in delivery.last_error + json.dumps(delivery.attempt_log)


def test_it_reduces_stored_urls_to_their_origin_when_migrating(db):
    from django.apps import apps

    migration = importlib.import_module("notifications.migrations.0004_webhook_url_origin_only")
    event = record_event("handoff.started", "started")
    unnamed = WebhookDelivery.objects.create(
        event=event,
        webhook=SLACK_STYLE,
        url=SLACK_STYLE,
        next_attempt_at=timezone.now(),
        created_at=event.created_at,
    )
    named = WebhookDelivery.objects.create(
        event=event,
        webhook="ops",
        url=SLACK_STYLE,
        next_attempt_at=timezone.now(),
        created_at=event.created_at,
    )
    migration.keep_only_origins(apps, None)
    unnamed.refresh_from_db()
    named.refresh_from_db()
    assert (unnamed.webhook, unnamed.url) == (public_webhook_name(SLACK_STYLE), "https://hooks.slack.com")
    assert (named.webhook, named.url) == ("ops", "https://hooks.slack.com")
