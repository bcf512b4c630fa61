"""The operator's console: reality rows with allowlisted actions, operations read-only."""

from django.contrib import admin, messages

from containers import services
from containers.models import Container, Operation, OperationKind, OperationStep, Swap, SwapTarget
from gaiaorch.admin_mixins import EstimatedCountPaginator, ReadOnlyAdmin
from gaiaorch.auth import actor_name
from gaiaorch.errors import DomainError


def _report(modeladmin, request, attempt) -> None:
    try:
        operation = attempt()
    except DomainError as exc:
        modeladmin.message_user(request, exc.detail, level=messages.ERROR)
        return
    modeladmin.message_user(
        request,
        f"Operation #{operation.id} ({operation.kind}) queued for {', '.join(operation.services)}.",
        level=messages.SUCCESS,
    )


def _service_action(kind: str, description: str):
    def action(modeladmin, request, queryset):
        names = list(queryset.values_list("service", flat=True))
        _report(
            modeladmin,
            request,
            lambda: services.request_service_operation(kind, names, actor=actor_name(request.user)),
        )

    action.__name__ = f"{kind}_action"
    return admin.action(description=description)(action)


def _swap_action(target: str, description: str):
    def action(modeladmin, request, queryset):
        if queryset.count() != 1:
            modeladmin.message_user(request, "Select exactly one service to swap.", level=messages.ERROR)
            return
        name = queryset.get().service
        _report(
            modeladmin, request, lambda: services.request_swap(name, target, actor=actor_name(request.user))
        )

    action.__name__ = f"swap_to_{target}_action"
    return admin.action(description=description)(action)


@admin.register(Container)
class ContainerAdmin(ReadOnlyAdmin):
    list_display = [
        "service",
        "stack",
        "role",
        "state",
        "health",
        "name",
        "image",
        "started_at",
        "last_seen_at",
    ]
    list_filter = ["stack", "state", "health"]
    search_fields = ["service", "name", "image", "container_id"]
    # Allowlist: only these actions exist, and every one goes through a service.
    actions = [
        _service_action(OperationKind.SERVICE_START, "Start the selected services (and their dependencies)"),
        _service_action(OperationKind.SERVICE_STOP, "Stop the selected services (and their dependents)"),
        _service_action(OperationKind.SERVICE_RESTART, "Restart the selected services"),
        _swap_action(SwapTarget.CANDIDATE, "Swap: send the live name's traffic to the candidate"),
        _swap_action(SwapTarget.LIVE, "Swap back: send the live name's traffic to the live service"),
    ]


class OperationStepInline(admin.TabularInline):
    model = OperationStep
    fields = ["name", "service", "outcome", "started_at", "finished_at", "detail", "figures"]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Operation)
class OperationAdmin(ReadOnlyAdmin):
    list_display = ["id", "kind", "status", "requested_by", "created_at", "finished_at", "error"]
    list_filter = ["kind", "status"]
    inlines = [OperationStepInline]
    paginator = EstimatedCountPaginator
    show_full_result_count = False


@admin.register(Swap)
class SwapAdmin(ReadOnlyAdmin):
    list_display = ["service", "candidate", "target", "changed_at", "changed_by"]
