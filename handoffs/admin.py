"""The operator's console: handoffs with their phase timeline; start, cancel and retry are operator
actions (handoffs/actions.py): each asks for a reason on its confirmation page, then calls a service."""

from __future__ import annotations

from django.contrib import admin
from django.urls import path
from django.utils.functional import lazy
from django.views.generic import RedirectView

from gaiaorch.actions import confirmation_url, list_action
from gaiaorch.admin_mixins import ReadOnlyAdmin
from handoffs.models import GpuTenant, Handoff, HandoffPhase, IncompleteRollback


class HandoffPhaseInline(admin.TabularInline):
    model = HandoffPhase
    fields = ["name", "outcome", "started_at", "finished_at", "detail", "figures"]
    readonly_fields = fields  # type: ignore[assignment]  # names only, no groups
    extra = 0
    can_delete = False
    ordering = ["started_at", "id"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


def _selected_handoff(handoffs) -> dict[str, str]:
    return {"handoff_id": handoffs.get().id}


@admin.register(Handoff)
class HandoffAdmin(admin.ModelAdmin):
    list_display = ["id", "type", "gpu_index", "phase", "source", "destination", "requested_by", "created_at"]
    list_filter = ["type", "phase", "gpu_index"]
    search_fields = ["id", "reason", "requested_by"]
    date_hierarchy = "created_at"
    inlines = [HandoffPhaseInline]
    actions = [
        list_action(
            "cancel-handoff",
            "Cancel the selected handoff (roll back)…",
            _selected_handoff,
            function_name="cancel_handoffs",
            exactly_one="handoff to cancel",
        ),
        list_action(
            "retry-handoff",
            "Retry the selected failed or cancelled handoff…",
            _selected_handoff,
            function_name="retry_handoffs",
            exactly_one="handoff to retry",
        ),
    ]
    change_list_template = "admin/handoffs/handoff/change_list.html"

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in Handoff._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_urls(self):
        # The list's "Start a handoff" address, kept: it leads to the operator action's form.
        start = RedirectView.as_view(url=lazy(confirmation_url, str)("start-handoff"))
        start_url = path("start/", self.admin_site.admin_view(start), name="handoffs_handoff_start")
        return [start_url, *super().get_urls()]


def _selected_rollback(rollbacks) -> dict[str, str]:
    return {"handoff_id": rollbacks.get().handoff_id}


@admin.register(IncompleteRollback)
class IncompleteRollbackAdmin(ReadOnlyAdmin):
    list_display = [
        "handoff",
        "source",
        "gpu_index",
        "attempts",
        "next_attempt_at",
        "resolution",
        "created_at",
    ]
    list_filter = ["resolution", "gpu_index"]
    actions = [
        list_action(
            "acknowledge-rollback",
            "Acknowledge the selected incomplete rollback…",
            _selected_rollback,
            function_name="acknowledge_rollbacks",
            exactly_one="incomplete rollback to acknowledge",
        )
    ]


@admin.register(GpuTenant)
class GpuTenantAdmin(ReadOnlyAdmin):
    list_display = ["gpu_index", "pid", "used_mib", "command", "first_seen_at", "last_seen_at"]
