"""The operator actions on GPU leases: revoke a holder's lease, cancel a waiting request."""

from __future__ import annotations

from typing import Any

from django import forms

from gaiaorch.actions import OperatorAction, ReasonForm, register
from leases import services


class LeaseForm(ReasonForm):
    lease_id = forms.UUIDField(widget=forms.HiddenInput)


def describe(initial: dict[str, Any]) -> str:
    lease = services.get_lease(initial["lease_id"])
    token = f", fencing token {lease.fencing_token}" if lease.fencing_token else ""
    return (
        f"{lease.requester} on GPU {lease.gpu.index} ({lease.status}{token}), "
        f"asked for: {lease.reason or 'no reason given'}."
    )


def revoke(actor: str, reason: str, params: dict[str, Any]) -> str:
    lease = services.revoke(params["lease_id"], actor=actor, reason=reason)
    return f"Revoked lease {lease.id} of {lease.requester} on GPU {lease.gpu.index}."


def cancel(actor: str, reason: str, params: dict[str, Any]) -> str:
    lease = services.cancel(params["lease_id"], actor=actor, reason=reason)
    return f"Cancelled the waiting request {lease.id} of {lease.requester}."


register(
    OperatorAction(
        "revoke-lease",
        "Revoke a GPU lease",
        "The holder loses the GPU at once and the next waiter is granted it.",
        LeaseForm,
        revoke,
        describe=describe,
    ),
    OperatorAction(
        "cancel-lease",
        "Cancel a waiting GPU request",
        "The request leaves the queue; the requester is told it was cancelled.",
        LeaseForm,
        cancel,
        describe=describe,
    ),
)
