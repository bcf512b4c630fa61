"""The dashboard page, its JSON feed and GPU cards (both polled every two seconds) and the
confirmation page of every registered operator action (gaiaorch.actions).

All are wrapped by `admin.site.admin_view`: staff only, CSRF-protected, never cached.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.serializers.json import DjangoJSONEncoder
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.utils import timezone

from containers import services as containers
from gaiaorch import actions
from gaiaorch import config as gaiaorch_config
from gaiaorch.auth import actor_name, tokenless_warning
from gaiaorch.errors import DomainError
from handoffs import services as handoffs
from handoffs.models import Handoff
from leases import services as leases
from notifications.feed import notification
from notifications.models import Event

LATEST_EVENTS = 15


def _handoffs(gpus: list[dict[str, Any]]) -> dict[str, Any]:
    active = [status for gpu in gpus if (status := handoffs.active_status(gpu["gpu"]))]
    latest = Handoff.objects.order_by("-created_at").first()
    return {"active": active, "latest": handoffs.status(latest) if latest and not active else None}


def snapshot() -> dict[str, Any]:
    """What the dashboard shows, from the apps' own status functions."""
    gpu = leases.gpu_status()
    return {
        "generated_at": timezone.now(),
        "gpu": gpu,
        "handoffs": _handoffs(gpu["gpus"]),
        "containers": containers.status(),
        "events": [notification(event) for event in Event.objects.order_by("-id")[:LATEST_EVENTS]],
    }


def dashboard(request: HttpRequest) -> TemplateResponse:
    context = {
        **admin.site.each_context(request),
        "title": "Operator dashboard",
        "is_nav_sidebar_enabled": False,  # the panels need the page's full width
        "snapshot": snapshot(),
        "handoff_types": list(gaiaorch_config.current().handoffs.types),
        "tokenless_warning": tokenless_warning(),
    }
    return TemplateResponse(request, "console/dashboard.html", context)


def feed(request: HttpRequest) -> JsonResponse:
    return JsonResponse(snapshot(), encoder=DjangoJSONEncoder)


def gpus(request: HttpRequest) -> TemplateResponse:
    """The GPU cards alone, drawn by the same template as on the page, for the page to swap in."""
    return TemplateResponse(request, "console/gpus.html", {"gpu": leases.gpu_status()})


def _prefill(query) -> dict[str, Any]:
    """Query parameters as form initial values; repeated ones (several services) as lists."""
    return {key: values if len(values) > 1 else values[0] for key, values in query.lists()}


def action(request: HttpRequest, name: str) -> HttpResponse:
    """GET: the confirmation form (prefilled from the query). POST: call the one service, report."""
    operator_action = actions.registered(name)
    if operator_action is None:
        raise Http404(f"No console action {name!r}.")
    data = request.POST if request.method == "POST" else None
    form = operator_action.form(data, initial=_prefill(request.GET))
    if request.method == "POST" and form.is_valid():
        params = dict(form.cleaned_data)
        reason = params.pop("reason")
        try:
            done = operator_action.perform(actor_name(request.user), reason, params)
        except DomainError as refusal:
            messages.error(request, f"{operator_action.title}: refused — {refusal.detail}")
        else:
            messages.success(request, done)
        return redirect("console-dashboard")
    context = {
        **admin.site.each_context(request),
        "title": operator_action.title,
        "is_nav_sidebar_enabled": False,
        "operator_action": operator_action,
        "target": operator_action.target(form.initial),  # type: ignore[arg-type]  # a dict
        "form": form,
    }
    return TemplateResponse(request, "console/confirm.html", context)
