"""Admin building blocks shared by the apps."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.paginator import Paginator
from django.utils.functional import cached_property


class EstimatedCountPaginator(Paginator):
    """Big history tables: skip the exact COUNT(*) when the table is large."""

    @cached_property
    def count(self) -> int:
        try:
            return super().count if self.object_list.query.where else self._estimate()  # type: ignore[attr-defined]
        except AttributeError:
            return super().count

    def _estimate(self) -> int:
        last = self.object_list.model.objects.order_by("-pk").values_list("pk", flat=True).first()  # type: ignore[attr-defined]
        return last or 0


class ReadOnlyAdmin(admin.ModelAdmin):
    """History is written by services only: the console may look, never touch."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class AuditedAdmin(admin.ModelAdmin):
    """An admin an operator may edit with (accounts, groups, the task queue's rows, which are
    Django's and django-q2's own admins): each addition, change and deletion also writes an
    `admin.changed` event, beside Django's admin log."""

    def log_addition(self, request, obj, message):
        _audit(request, obj, "added", message)
        return super().log_addition(request, obj, message)

    def log_change(self, request, obj, message):
        _audit(request, obj, "changed", message)
        return super().log_change(request, obj, message)

    def log_deletions(self, request, queryset):
        for obj in queryset:
            _audit(request, obj, "deleted", [])
        return super().log_deletions(request, queryset)


def _audit(request, obj, action: str, message: Any) -> None:
    from gaiaorch import event_types, events
    from gaiaorch.auth import actor_name

    label = obj._meta.label
    event_types.record(
        events.ADMIN_CHANGED,
        f"{actor_name(request.user)} {action} {obj._meta.verbose_name} {obj}",
        actor=actor_name(request.user),
        data={"model": label, "object": str(obj), "action": action, "changed": _changes(message)},
        subject=(obj._meta.model_name[:32], obj.pk),
    )


def _changes(message: Any) -> list[Any]:
    """The admin's change message as JSON: a list of {"changed": {"fields": [...]}} entries."""
    if isinstance(message, str):
        return [message] if message else []
    return list(message or [])


def audit_editable_admins(site: admin.AdminSite) -> list[str]:
    """Give every admin of `site` that an operator could edit with (not a ReadOnlyAdmin) the
    audit of AuditedAdmin, by registering it again as a subclass of both. Returns their models."""
    wrapped = []
    for model, model_admin in list(site._registry.items()):
        if isinstance(model_admin, ReadOnlyAdmin | AuditedAdmin):
            continue
        audited = type(f"Audited{type(model_admin).__name__}", (AuditedAdmin, type(model_admin)), {})
        site.unregister(model)
        site.register(model, audited)
        wrapped.append(model._meta.label)
    return wrapped
