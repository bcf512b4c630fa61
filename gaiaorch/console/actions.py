"""Every operator action of the console: a form (always with a reason) and one service call.

Each action's `perform(actor, reason, params)` calls exactly one service function and returns the
sentence the operator sees; refusals stay `DomainError`s for the view to show as messages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils.http import urlencode

from containers import services as containers
from containers.models import OperationKind, SwapTarget
from gaiaorch import config as gaiaorch_config
from gaiaorch.errors import DomainError
from handoffs import services as handoffs
from leases import services as leases


class ReasonForm(forms.Form):
    reason = forms.CharField(
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Recorded in the audit log with your name.",
    )


class LeaseForm(ReasonForm):
    lease_id = forms.UUIDField(widget=forms.HiddenInput)


class CandidateStartForm(ReasonForm):
    gpu_enabled = forms.BooleanField(
        required=False, label="With GPU", help_text="Take a GPU lease for the candidate stack first."
    )


def _configured_services() -> list[tuple[str, str]]:
    return [
        (service.name, f"{service.name} ({service.stack})")
        for service in gaiaorch_config.current().containers()
    ]


class ServicesForm(ReasonForm):
    services = forms.MultipleChoiceField(choices=_configured_services, widget=forms.CheckboxSelectMultiple)


def _swappable() -> list[tuple[str, str]]:
    config = gaiaorch_config.current()
    live = [service for service in config.stack_services("live") if config.twin(service)]
    return [(service.name, f"{service.name} ⇄ {config.twin(service).name}") for service in live]


class SwapForm(ReasonForm):
    service = forms.ChoiceField(choices=_swappable)
    target = forms.ChoiceField(choices=SwapTarget.choices)


def _handoff_types() -> list[tuple[str, str]]:
    types = gaiaorch_config.current().handoffs.types
    return [(name, f"{name}: {kind.source} → {kind.destination}") for name, kind in types.items()]


class HandoffStartForm(ReasonForm):
    type = forms.ChoiceField(choices=_handoff_types)
    gpu = forms.IntegerField(initial=0, min_value=0)
    timeout_seconds = forms.IntegerField(required=False, min_value=1, help_text="Deadline of each phase.")


class HandoffForm(ReasonForm):
    handoff_id = forms.UUIDField(widget=forms.HiddenInput)


@dataclass(frozen=True)
class OperatorAction:
    name: str
    title: str
    explains: str
    form: type[ReasonForm]
    perform: Callable[[str, str, dict[str, Any]], str]
    danger: bool = True
    describe: Callable[[dict[str, Any]], str] | None = None

    def target(self, initial: dict[str, Any]) -> str:
        """One sentence about what the action would act on, for the confirmation page."""
        if self.describe is None:
            return ""
        try:
            return self.describe(initial)
        except DomainError as missing:
            return missing.detail
        except (KeyError, ValueError, ValidationError):
            return ""

    def url(self, **query: Any) -> str:
        """The confirmation page, prefilled; admin list actions redirect here."""
        return reverse("console-action", args=[self.name]) + (
            f"?{urlencode(query, doseq=True)}" if query else ""
        )


def _lease(initial: dict[str, Any]) -> str:
    lease = leases.get_lease(initial["lease_id"])
    token = f", fencing token {lease.fencing_token}" if lease.fencing_token else ""
    return (
        f"{lease.requester} on GPU {lease.gpu.index} ({lease.status}{token}), "
        f"asked for: {lease.reason or 'no reason given'}."
    )


def _handoff(initial: dict[str, Any]) -> str:
    handoff = handoffs.get(initial["handoff_id"])
    route = f"{handoff.source} → {handoff.destination}"
    return f"{handoff.type} on GPU {handoff.gpu_index} ({route}), now {handoff.phase}."


def _revoke(actor: str, reason: str, params: dict[str, Any]) -> str:
    lease = leases.revoke(params["lease_id"], actor=actor, reason=reason)
    return f"Revoked lease {lease.id} of {lease.requester} on GPU {lease.gpu.index}."


def _cancel_lease(actor: str, reason: str, params: dict[str, Any]) -> str:
    lease = leases.cancel(params["lease_id"], actor=actor, reason=reason)
    return f"Cancelled the waiting request {lease.id} of {lease.requester}."


def _stack(kind: str) -> Callable[[str, str, dict[str, Any]], str]:
    def perform(actor: str, reason: str, params: dict[str, Any]) -> str:
        operation = containers.request_stack_operation(kind, actor=actor, reason=reason, **params)
        return _queued(operation)

    return perform


def _services(kind: str) -> Callable[[str, str, dict[str, Any]], str]:
    def perform(actor: str, reason: str, params: dict[str, Any]) -> str:
        operation = containers.request_service_operation(kind, params["services"], actor=actor, reason=reason)
        return _queued(operation)

    return perform


def _swap(actor: str, reason: str, params: dict[str, Any]) -> str:
    return _queued(containers.request_swap(params["service"], params["target"], actor=actor, reason=reason))


def _queued(operation) -> str:
    return f"Operation #{operation.id} ({operation.kind}) queued for {', '.join(operation.services)}."


def _start_handoff(actor: str, reason: str, params: dict[str, Any]) -> str:
    handoff = handoffs.start(actor=actor, reason=reason, **params)
    return f"Started handoff {handoff.type} ({handoff.id})."


def _cancel_handoff(actor: str, reason: str, params: dict[str, Any]) -> str:
    handoff = handoffs.cancel(params["handoff_id"], actor=actor, reason=reason)
    return f"Cancel requested for handoff {handoff.type} ({handoff.id}); it rolls back at its next check."


ACTIONS = {
    action.name: action
    for action in [
        OperatorAction(
            "revoke-lease",
            "Revoke a GPU lease",
            "The holder loses the GPU at once and the next waiter is granted it.",
            LeaseForm,
            _revoke,
            describe=_lease,
        ),
        OperatorAction(
            "cancel-lease",
            "Cancel a waiting GPU request",
            "The request leaves the queue; the requester is told it was cancelled.",
            LeaseForm,
            _cancel_lease,
            describe=_lease,
        ),
        OperatorAction(
            "live-stop",
            "Stop the live stack",
            "Every live service stops, dependents first.",
            ReasonForm,
            _stack(OperationKind.LIVE_STOP),
        ),
        OperatorAction(
            "live-start",
            "Start the live stack",
            "Every live service starts, dependencies first, and must turn healthy.",
            ReasonForm,
            _stack(OperationKind.LIVE_START),
            danger=False,
        ),
        OperatorAction(
            "candidate-start",
            "Start the candidate stack",
            "Every candidate service starts; with GPU it first takes a lease and checks free VRAM.",
            CandidateStartForm,
            _stack(OperationKind.CANDIDATE_START),
            danger=False,
        ),
        OperatorAction(
            "candidate-stop",
            "Stop the candidate stack",
            "Every candidate service stops and its GPU lease is released.",
            ReasonForm,
            _stack(OperationKind.CANDIDATE_STOP),
        ),
        OperatorAction(
            "service-start",
            "Start services",
            "The chosen services start, with the services they depend on, and must turn healthy.",
            ServicesForm,
            _services(OperationKind.SERVICE_START),
            danger=False,
        ),
        OperatorAction(
            "service-stop",
            "Stop services",
            "The chosen services stop, with the services that depend on them (dependents first).",
            ServicesForm,
            _services(OperationKind.SERVICE_STOP),
        ),
        OperatorAction(
            "service-restart",
            "Restart services",
            "The chosen services stop and start again, and must turn healthy.",
            ServicesForm,
            _services(OperationKind.SERVICE_RESTART),
        ),
        OperatorAction(
            "swap",
            "Swap a service",
            "The live name's traffic goes to the candidate (or back to the live service).",
            SwapForm,
            _swap,
        ),
        OperatorAction(
            "start-handoff",
            "Start a GPU handoff",
            "The source releases the GPU, freed VRAM is measured, then the destination gets it.",
            HandoffStartForm,
            _start_handoff,
        ),
        OperatorAction(
            "cancel-handoff",
            "Cancel the running handoff",
            "The handoff rolls back at its next check and the source gets the GPU back.",
            HandoffForm,
            _cancel_handoff,
            describe=_handoff,
        ),
    ]
}
