from django.contrib import admin, messages
from django.urls import reverse
from django.utils.html import format_html

from gaiaorch.admin_mixins import EstimatedCountPaginator, ReadOnlyAdmin
from gaiaorch.auth import actor_name
from notifications import services
from notifications.models import Event, OracleFallbackBurst, WebhookDelivery


def event_link(event_id: int | None) -> str:
    if event_id is None:
        return "—"
    url = reverse("admin:notifications_event_change", args=[event_id])
    return format_html('<a href="{}">#{}</a>', url, event_id)


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ["id", "created_at", "type", "severity", "title", "actor", "subject_kind", "subject_id"]
    list_filter = ["severity", "type", "subject_kind"]
    search_fields = ["title", "message", "type", "actor", "subject_id", "correlation_id"]
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    date_hierarchy = None


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "webhook",
        "event_column",
        "event_type",
        "status",
        "attempts",
        "last_status_code",
        "next_attempt_at",
        "delivered_at",
    ]
    list_filter = ["status", "webhook", "event__type"]
    search_fields = ["webhook", "url", "last_error", "event__title"]
    list_select_related = ["event"]
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    actions = ["retry_failed"]

    @admin.action(description="Retry the selected failed deliveries once more")
    def retry_failed(self, request, queryset) -> None:
        retried = services.retry_failed_deliveries(
            list(queryset.values_list("id", flat=True)), actor_name(request.user)
        )
        self.message_user(request, f"{retried} failed deliveries will be retried now.", messages.SUCCESS)

    @admin.display(description="event", ordering="event_id")
    def event_column(self, delivery: WebhookDelivery) -> str:
        return event_link(delivery.event_id)

    @admin.display(description="type", ordering="event__type")
    def event_type(self, delivery: WebhookDelivery) -> str:
        return delivery.event.type


@admin.register(OracleFallbackBurst)
class OracleFallbackBurstAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "fallback_model",
        "original_role",
        "count",
        "opened_at",
        "window_ends_at",
        "closed_at",
        "first_event_column",
        "summary_event_column",
    ]
    list_filter = ["fallback_model", "original_role"]
    search_fields = ["fallback_model", "original_role", "last_reason"]

    @admin.display(description="first event")
    def first_event_column(self, burst: OracleFallbackBurst) -> str:
        return event_link(burst.first_event_id)

    @admin.display(description="summary event")
    def summary_event_column(self, burst: OracleFallbackBurst) -> str:
        return event_link(burst.summary_event_id)
