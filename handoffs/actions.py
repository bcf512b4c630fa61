"""The operator actions on handoffs: start one, cancel the running one, retry an ended one,
acknowledge a rollback that left its source without its GPU memory."""

from __future__ import annotations

from typing import Any

from django import forms

from gaiaorch import config
from gaiaorch.actions import OperatorAction, ReasonForm, register
from handoffs import services


def _handoff_types() -> list[tuple[str, str]]:
    types = config.current().handoffs.types
    return [(name, f"{name}: {kind.source} → {kind.destination}") for name, kind in types.items()]


class HandoffStartForm(ReasonForm):
    type = forms.ChoiceField(choices=_handoff_types)
    gpu = forms.IntegerField(initial=0, min_value=0)
    timeout_seconds = forms.IntegerField(required=False, min_value=1, help_text="Deadline of each phase.")


class HandoffForm(ReasonForm):
    handoff_id = forms.UUIDField(widget=forms.HiddenInput)


def describe(initial: dict[str, Any]) -> str:
    handoff = services.get(initial["handoff_id"])
    route = f"{handoff.source} → {handoff.destination}"
    return f"{handoff.type} on GPU {handoff.gpu_index} ({route}), now {handoff.phase}."


def start(actor: str, reason: str, params: dict[str, Any]) -> str:
    handoff = services.start(actor=actor, reason=reason, **params)
    return f"Started handoff {handoff.type} ({handoff.id})."


def cancel(actor: str, reason: str, params: dict[str, Any]) -> str:
    handoff = services.cancel(params["handoff_id"], actor=actor, reason=reason)
    return f"Cancel requested for handoff {handoff.type} ({handoff.id}); it rolls back at its next check."


def acknowledge(actor: str, reason: str, params: dict[str, Any]) -> str:
    row = services.acknowledge_rollback(params["handoff_id"], actor=actor, reason=reason)
    return (
        f"Acknowledged the incomplete rollback of handoff {row.handoff_id}: its reclaim is no longer retried."
    )


def describe_rollback(initial: dict[str, Any]) -> str:
    handoff = services.get(initial["handoff_id"])
    return f"{describe(initial)} Its rollback left {handoff.source} without its GPU memory."


def retry(actor: str, reason: str, params: dict[str, Any]) -> str:
    handoff = services.retry(params["handoff_id"], actor=actor, reason=reason)
    return f"Started handoff {handoff.type} ({handoff.id}), a retry of {params['handoff_id']}."


register(
    OperatorAction(
        "start-handoff",
        "Start a GPU handoff",
        "The source releases the GPU, freed VRAM is measured, then the destination gets it.",
        HandoffStartForm,
        start,
    ),
    OperatorAction(
        "cancel-handoff",
        "Cancel the running handoff",
        "The handoff rolls back at its next check and the source gets the GPU back.",
        HandoffForm,
        cancel,
        describe=describe,
    ),
    OperatorAction(
        "retry-handoff",
        "Retry a failed or cancelled handoff",
        "A new handoff of the same type starts on the same GPU, with the same phase deadline.",
        HandoffForm,
        retry,
        danger=False,
        describe=describe,
    ),
    OperatorAction(
        "acknowledge-rollback",
        "Acknowledge an incomplete rollback",
        "The ticker stops reclaiming the source's GPU memory and /ready stops failing on it: "
        "you take the source in hand.",
        HandoffForm,
        acknowledge,
        describe=describe_rollback,
    ),
)
