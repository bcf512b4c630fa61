from django.contrib import admin

from gaiaorch.admin_mixins import EstimatedCountPaginator, ReadOnlyAdmin
from notifications.models import Event


@admin.register(Event)
class EventAdmin(ReadOnlyAdmin):
    list_display = ["id", "created_at", "type", "severity", "title", "actor", "subject_kind", "subject_id"]
    list_filter = ["severity", "type", "subject_kind"]
    search_fields = ["title", "message", "type", "actor", "subject_id", "correlation_id"]
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    date_hierarchy = None
