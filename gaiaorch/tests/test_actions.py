"""The one reasoned-action mechanism: registration, the confirmation page's address."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from gaiaorch import actions


def test_it_refuses_two_actions_of_one_name():
    revoke = actions.registered("revoke-lease")
    twin = actions.OperatorAction("revoke-lease", "Another", "", actions.ReasonForm, lambda *_: "")
    with pytest.raises(ImproperlyConfigured, match="revoke-lease"):
        actions.register(twin)
    assert actions.registered("revoke-lease") is revoke


def test_it_registers_the_same_action_again_without_complaint():
    revoke = actions.registered("revoke-lease")
    actions.register(revoke)
    assert actions.registered("revoke-lease") is revoke


def test_it_prefills_the_confirmation_page_from_the_query():
    url = actions.confirmation_url("service-stop", services=["gaia-web", "gaia-mcp"])
    assert url == "/admin/dashboard/action/service-stop?services=gaia-web&services=gaia-mcp"
    assert actions.registered("live-stop").url() == "/admin/dashboard/action/live-stop"


def test_it_requires_a_reason_of_at_most_500_characters():
    assert not actions.ReasonForm({"reason": ""}).is_valid()
    assert not actions.ReasonForm({"reason": "x" * 501}).is_valid()
    assert actions.ReasonForm({"reason": "x" * 500}).is_valid()
