"""The operator's console for GPUs: a dashboard, the lease history, and revoke/cancel actions."""

from __future__ import annotations

from django.contrib import admin
from django.template.response import TemplateResponse
from django.utils.html import format_html

from gaiaorch.actions import list_action
from gaiaorch.admin_mixins import ReadOnlyAdmin
from leases import services
from leases.models import Gpu, Lease


@admin.register(Gpu)
class GpuAdmin(ReadOnlyAdmin):
    """The changelist is a live dashboard: measured memory, holder, fencing token, queue."""

    def changelist_view(self, request, extra_context=None):
        context = {
            **self.admin_site.each_context(request),
            "title": "GPU dashboard",
            "opts": self.model._meta,
            "status": services.gpu_status(),
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/leases/gpu/dashboard.html", context)


@admin.register(Lease)
class LeaseAdmin(ReadOnlyAdmin):
    list_display = [
        "short_id",
        "gpu",
        "requester",
        "status",
        "priority",
        "fencing_token",
        "reason",
        "requested_at",
        "granted_at",
        "expires_at",
        "ended_by",
    ]
    list_filter = ["status", "gpu", "requester", "priority"]
    search_fields = ["id", "requester", "reason", "end_reason", "ended_by"]
    list_select_related = ["gpu"]
    # Each leads to the operator action's confirmation page, which asks for the reason.
    actions = [
        list_action(
            "revoke-lease",
            "Revoke the selected lease…",
            lambda leases: {"lease_id": leases.get().id},
            function_name="revoke_leases",
            exactly_one="lease to revoke",
        ),
        list_action(
            "cancel-lease",
            "Cancel the selected waiting request…",
            lambda leases: {"lease_id": leases.get().id},
            function_name="cancel_leases",
            exactly_one="lease to cancel",
        ),
    ]

    @admin.display(description="lease")
    def short_id(self, lease: Lease) -> str:
        return format_html("<code>{}</code>", str(lease.id)[:8])

    def get_actions(self, request):
        # Changing who holds a GPU is an operator's call; the history itself stays read-only.
        return super().get_actions(request) if request.user.is_staff else {}
