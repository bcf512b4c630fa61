"""The operator's console: reality rows with allowlisted, confirmed actions; operations read-only."""

from django.contrib import admin

from containers.models import Container, Operation, OperationStep, Swap, SwapTarget
from gaiaorch.actions import list_action
from gaiaorch.admin_mixins import EstimatedCountPaginator, ReadOnlyAdmin


def _confirm_services(name: str, description: str):
    return list_action(
        name,
        description,
        lambda rows: {"services": list(rows.values_list("service", flat=True))},
        function_name=f"{name.replace('-', '_')}_action",
    )


def _confirm_swap(target: str, description: str):
    return list_action(
        "swap",
        description,
        lambda rows: {"service": rows.get().service, "target": target},
        function_name=f"swap_to_{target}_action",
        exactly_one="service to swap",
    )


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
    # Allowlist: only these actions exist; each leads to the operator action's confirmation page,
    # which asks for the reason and calls the service.
    actions = [
        _confirm_services("service-start", "Start the selected services (and their dependencies)…"),
        _confirm_services("service-stop", "Stop the selected services (and their dependents)…"),
        _confirm_services("service-restart", "Restart the selected services…"),
        _confirm_swap(SwapTarget.CANDIDATE, "Swap: send the live name's traffic to the candidate…"),
        _confirm_swap(SwapTarget.LIVE, "Swap back: send the live name's traffic to the live service…"),
    ]


class OperationStepInline(admin.TabularInline):
    model = OperationStep
    fields = ["name", "service", "outcome", "started_at", "finished_at", "detail", "figures"]
    readonly_fields = fields  # type: ignore[assignment]  # names only, no groups
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
