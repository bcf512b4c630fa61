"""The operator's console for GPUs: a dashboard, the lease history, and revoke/cancel actions."""

from __future__ import annotations

from django.contrib import admin, messages
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from gaiaorch.admin_mixins import ReadOnlyAdmin
from gaiaorch.auth import actor_name
from gaiaorch.errors import DomainError
from leases import services
from leases.models import Gpu, Lease, LeaseStatus


def memory_bar(memory: dict) -> dict | None:
    total, used = memory.get("total_mb"), memory.get("used_mb")
    if not total or used is None:
        return None
    return {"percent": round(100 * used / total), "used_gib": used / 1024, "total_gib": total / 1024}


@admin.register(Gpu)
class GpuAdmin(ReadOnlyAdmin):
    """The changelist is a live dashboard: measured memory, holder, fencing token, queue."""

    def changelist_view(self, request, extra_context=None):
        status = services.gpu_status()
        for gpu in status["gpus"]:
            gpu["bar"] = memory_bar(gpu["memory"])
            gpu["lease_url"] = (
                reverse("admin:leases_lease_change", args=[gpu["lease_id"]]) if gpu["lease_id"] else None
            )
        context = {
            **self.admin_site.each_context(request),
            "title": "GPU dashboard",
            "opts": self.model._meta,
            "status": status,
            **(extra_context or {}),
        }
        return TemplateResponse(request, "admin/leases/gpu/dashboard.html", context)


class ReasonedAction:
    """An admin action that first asks the operator for a reason, then calls a service per lease."""

    def __init__(self, name: str, service, verb: str, done: str, statuses: list[str]):
        self.__name__ = name
        self.service = service
        self.verb = verb
        self.done = done
        self.statuses = statuses
        self.short_description = f"{verb.capitalize()} selected leases (asks for a reason)"

    def __call__(self, modeladmin, request, queryset):
        reason = request.POST.get("reason", "").strip()
        if "apply" not in request.POST or not reason:
            return TemplateResponse(
                request,
                "admin/leases/lease/action_reason.html",
                {
                    **modeladmin.admin_site.each_context(request),
                    "title": f"{self.verb.capitalize()} leases",
                    "opts": modeladmin.model._meta,
                    "action": self.__name__,
                    "verb": self.verb,
                    "leases": queryset,
                    "missing_reason": "apply" in request.POST,
                },
            )
        done, refused = 0, []
        skipped = queryset.exclude(status__in=self.statuses).count()
        for lease in queryset.filter(status__in=self.statuses):
            try:
                self.service(lease.id, actor=actor_name(request.user), reason=reason)
                done += 1
            except DomainError as exc:
                refused.append(exc.detail)
        modeladmin.message_user(request, f"{self.done.capitalize()} {done} lease(s); skipped {skipped}.")
        for detail in refused:
            modeladmin.message_user(request, detail, messages.WARNING)
        return None


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
    actions = [
        ReasonedAction("revoke_leases", services.revoke, "revoke", "revoked", LeaseStatus.live()),
        ReasonedAction("cancel_leases", services.cancel, "cancel", "cancelled", [LeaseStatus.WAITING]),
    ]

    @admin.display(description="lease")
    def short_id(self, lease: Lease) -> str:
        return format_html("<code>{}</code>", str(lease.id)[:8])

    def get_actions(self, request):
        # Changing who holds a GPU is an operator's call; the history itself stays read-only.
        return super().get_actions(request) if request.user.is_staff else {}
