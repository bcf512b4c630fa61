"""Operator actions: a confirmed form with a required reason, then exactly one service call.

Each app declares its own actions in its `actions.py` and registers them here (the console imports
every app's `actions` module at start-up, as the admin does with `admin.py`). The console renders
the confirmation page of any registered action: GET shows the form prefilled from the query, POST
validates it and calls `perform(actor, reason, params)`, which calls one service function and
returns the sentence the operator sees. That service writes the audit event with the actor and the
reason; its refusals stay `DomainError`s, shown as messages. Admin list actions lead to the same
page by URL name (`list_action`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db.models import QuerySet
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.http import urlencode

from gaiaorch.errors import DomainError

CONFIRMATION_URL_NAME = "console-action"
REASON_MAX_LENGTH = 500


class ReasonForm(forms.Form):
    """The form of every operator action: its own fields plus the reason, always required."""

    reason = forms.CharField(
        max_length=REASON_MAX_LENGTH,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Recorded in the audit log with your name.",
    )


Perform = Callable[[str, str, dict[str, Any]], str]


@dataclass(frozen=True)
class OperatorAction:
    name: str
    title: str
    explains: str
    form: type[ReasonForm]
    perform: Perform
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
        return confirmation_url(self.name, **query)


_REGISTERED: dict[str, OperatorAction] = {}


def register(*actions: OperatorAction) -> None:
    for action in actions:
        if _REGISTERED.setdefault(action.name, action) is not action:
            raise ImproperlyConfigured(f"Two operator actions are named {action.name!r}.")


def registered(name: str) -> OperatorAction | None:
    return _REGISTERED.get(name)


def confirmation_url(name: str, **query: Any) -> str:
    """The confirmation page of action `name`, prefilled from `query` (lists repeat the key)."""
    return reverse(CONFIRMATION_URL_NAME, args=[name]) + (f"?{urlencode(query, doseq=True)}" if query else "")


def list_action(
    name: str,
    description: str,
    prefill: Callable[[QuerySet], dict[str, Any]],
    *,
    function_name: str,
    exactly_one: str | None = None,
):
    """An admin list action that leads to the confirmation page of action `name`, prefilled from the
    selected rows; with `exactly_one` (e.g. "handoff to cancel") any other selection is refused."""

    def action(modeladmin, request, queryset):
        if exactly_one is not None and queryset.count() != 1:
            modeladmin.message_user(request, f"Select exactly one {exactly_one}.", messages.ERROR)
            return None
        return HttpResponseRedirect(confirmation_url(name, **prefill(queryset)))

    action.__name__ = function_name
    return admin.action(description=description)(action)
