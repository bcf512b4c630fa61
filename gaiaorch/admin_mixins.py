"""Admin building blocks shared by the apps."""

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
