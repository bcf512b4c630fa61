"""The operator's console: handoffs with their phase timeline; start, cancel and retry call services."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.http import HttpResponseRedirect
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse

from gaiaorch import config
from gaiaorch.console.actions import ACTIONS
from gaiaorch.errors import DomainError
from handoffs import services
from handoffs.models import GpuBaseline, Handoff, HandoffPhase


class HandoffPhaseInline(admin.TabularInline):
    model = HandoffPhase
    fields = ["name", "outcome", "started_at", "finished_at", "detail", "figures"]
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ["started_at", "id"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class StartForm(forms.Form):
    type = forms.ChoiceField(choices=lambda: [(name, name) for name in config.current().handoffs.types])
    reason = forms.CharField(required=False, max_length=500)
    timeout_seconds = forms.IntegerField(required=False, min_value=1, help_text="Deadline of each phase")
    gpu = forms.IntegerField(initial=0, min_value=0)


@admin.register(Handoff)
class HandoffAdmin(admin.ModelAdmin):
    list_display = ["id", "type", "gpu_index", "phase", "source", "destination", "requested_by", "created_at"]
    list_filter = ["type", "phase", "gpu_index"]
    search_fields = ["id", "reason", "requested_by"]
    date_hierarchy = "created_at"
    inlines = [HandoffPhaseInline]
    actions = ["cancel_handoffs", "retry_handoffs"]
    change_list_template = "admin/handoffs/handoff/change_list.html"

    def get_readonly_fields(self, request, obj=None):
        return [field.name for field in Handoff._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_urls(self):
        start = path("start/", self.admin_site.admin_view(self.start_view), name="handoffs_handoff_start")
        return [start, *super().get_urls()]

    def start_view(self, request):
        form = StartForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                handoff = services.start(actor=request.user.get_username(), **form.cleaned_data)
            except DomainError as refusal:
                self.message_user(request, refusal.detail, messages.ERROR)
            else:
                self.message_user(request, f"Started handoff {handoff.id}.", messages.SUCCESS)
                return redirect(reverse("admin:handoffs_handoff_change", args=[handoff.id]))
        context = {**self.admin_site.each_context(request), "form": form, "title": "Start a handoff"}
        return TemplateResponse(request, "admin/handoffs/handoff/start.html", context)

    @admin.action(description="Cancel the selected handoff (roll back)…")
    def cancel_handoffs(self, request, queryset):
        """Leads to the console's confirmation page, which asks for a reason."""
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one handoff to cancel.", messages.ERROR)
            return None
        return HttpResponseRedirect(ACTIONS["cancel-handoff"].url(handoff_id=queryset.get().id))

    @admin.action(description="Retry selected failed or cancelled handoffs")
    def retry_handoffs(self, request, queryset):
        self._each(
            request, queryset, lambda handoff: services.retry(handoff.id, actor=request.user.get_username())
        )

    def _each(self, request, queryset, act) -> None:
        done = 0
        for handoff in queryset:
            try:
                act(handoff)
                done += 1
            except DomainError as refusal:
                self.message_user(request, f"{handoff.id}: {refusal.detail}", messages.WARNING)
        self.message_user(request, f"{done} of {len(queryset)} handoffs done.")


@admin.register(GpuBaseline)
class GpuBaselineAdmin(admin.ModelAdmin):
    list_display = ["gpu_index", "used_mib", "measured_at"]

    def has_add_permission(self, request) -> bool:
        return False
