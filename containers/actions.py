"""The operator actions on containers: the live and candidate stacks, single services, swaps."""

from __future__ import annotations

from typing import Any

from django import forms

from containers import services
from containers.models import Operation, OperationKind, SwapTarget
from gaiaorch import config
from gaiaorch.actions import OperatorAction, Perform, ReasonForm, register


class CandidateStartForm(ReasonForm):
    gpu_enabled = forms.BooleanField(
        required=False, label="With GPU", help_text="Take a GPU lease for the candidate stack first."
    )


def _configured_services() -> list[tuple[str, str]]:
    return [(service.name, f"{service.name} ({service.stack})") for service in config.current().containers()]


class ServicesForm(ReasonForm):
    services = forms.MultipleChoiceField(choices=_configured_services, widget=forms.CheckboxSelectMultiple)


def _swappable() -> list[tuple[str, str]]:
    stack = config.current()
    live = [service for service in stack.stack_services("live") if stack.twin(service)]
    return [(service.name, f"{service.name} ⇄ {stack.twin(service).name}") for service in live]  # type: ignore[union-attr]


class SwapForm(ReasonForm):
    service = forms.ChoiceField(choices=_swappable)
    target = forms.ChoiceField(choices=SwapTarget.choices)


def _queued(operation: Operation) -> str:
    return f"Operation #{operation.id} ({operation.kind}) queued for {', '.join(operation.services)}."


def _stack(kind: str) -> Perform:
    def perform(actor: str, reason: str, params: dict[str, Any]) -> str:
        return _queued(services.request_stack_operation(kind, actor=actor, reason=reason, **params))

    return perform


def _services(kind: str) -> Perform:
    def perform(actor: str, reason: str, params: dict[str, Any]) -> str:
        return _queued(
            services.request_service_operation(kind, params["services"], actor=actor, reason=reason)
        )

    return perform


def swap(actor: str, reason: str, params: dict[str, Any]) -> str:
    return _queued(services.request_swap(params["service"], params["target"], actor=actor, reason=reason))


register(
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
        swap,
    ),
)
