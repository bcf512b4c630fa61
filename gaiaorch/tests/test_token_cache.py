"""The short-lived memory of tokens found (gaiaorch.auth.token_for_key): one lookup per key and
period, and never a key that was rotated, deleted or deactivated in this process."""

from __future__ import annotations

import threading

import pytest
from django.contrib.auth import get_user_model
from django.db import connections

from conftest import client_for_token
from gaiaorch import auth
from gaiaorch.models import ApiToken

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def empty_cache():
    auth._forget()
    yield
    auth._forget()


def test_it_looks_a_key_up_once_per_period(django_assert_num_queries):
    key = auth.ensure_service_account("gaia-audio")
    with django_assert_num_queries(2):  # the token with its account, and its read-only group
        assert auth.user_for_key(key).username == "gaia-audio"
    with django_assert_num_queries(0):
        assert auth.user_for_key(key).username == "gaia-audio"


def test_it_looks_again_once_the_period_ends(monkeypatch, django_assert_num_queries):
    key = auth.ensure_service_account("gaia-audio")
    monkeypatch.setattr(auth, "TOKEN_CACHE_SECONDS", 0.0)
    auth.user_for_key(key)
    with django_assert_num_queries(2):
        assert auth.user_for_key(key) is not None


def test_it_refuses_a_rotated_key_at_the_next_request():
    old = auth.ensure_service_account("gaia-audio")
    assert client_for_token(old).get("/gpu/status").status_code == 200
    new = auth.ensure_service_account("gaia-audio", rotate=True)
    assert auth.user_for_key(old) is None
    assert client_for_token(old).post("/gpu/acquire", {"requester": "gaia-audio"}).status_code == 401
    assert auth.user_for_key(new).username == "gaia-audio"


def test_it_refuses_a_deleted_token_and_a_deactivated_account_at_once():
    deleted = auth.ensure_service_account("gaia-audio")
    deactivated = auth.ensure_service_account("gaia-study")
    assert auth.user_for_key(deleted) and auth.user_for_key(deactivated)
    ApiToken.objects.get(user__username="gaia-audio").delete()
    user = get_user_model().objects.get(username="gaia-study")
    user.is_active = False
    user.save()
    assert auth.user_for_key(deleted) is None
    assert auth.user_for_key(deactivated) is None


def test_it_sees_an_account_made_read_only_at_once():
    operator = get_user_model().objects.create_user("olivia", is_staff=True)
    key = auth.issue_token(operator)
    assert auth.user_for_key(key).is_staff
    auth.set_read_only(operator, True)
    assert not auth.user_for_key(key).is_staff


def test_it_gives_every_caller_its_own_copy():
    key = auth.ensure_service_account("gaia-audio")
    auth.user_for_key(key).marked_by_one_request = True
    assert not hasattr(auth.user_for_key(key), "marked_by_one_request")


@pytest.mark.django_db(transaction=True)
def test_it_does_not_remember_what_it_read_before_a_revocation(monkeypatch):
    """A lookup that read the row before a revocation must not store it after that revocation."""
    key = auth.ensure_service_account("gaia-audio")
    read, revoked = threading.Event(), threading.Event()
    first = ApiToken.objects.select_related

    def slow_read(*args, **kwargs):
        rows = first(*args, **kwargs)
        read.set()
        revoked.wait(10)  # the revocation happens between this lookup's read and its store
        return rows

    monkeypatch.setattr(ApiToken.objects, "select_related", slow_read)
    found: list = []

    def look_up() -> None:
        try:
            found.append(auth.token_for_key(key))
        finally:
            connections.close_all()

    lookup = threading.Thread(target=look_up)
    lookup.start()
    assert read.wait(10)
    auth.forget_tokens()  # what a rotation does when it saves the new digest
    revoked.set()
    lookup.join(10)
    monkeypatch.setattr(ApiToken.objects, "select_related", first)
    assert found and found[0] is not None  # it read the key while it was still valid
    assert digest_remembered(key) is False


def digest_remembered(key: str) -> bool:
    with auth._found_lock:
        return auth.digest_of(key) in auth._found


def test_it_refuses_a_write_of_an_account_made_read_only_at_the_next_request(django_assert_num_queries):
    key = auth.ensure_service_account("gaia-audio")
    client = client_for_token(key)
    body = {"requester": "gaia-audio", "reason": "tts"}
    assert client.post("/gpu/acquire", body, format="json").status_code == 200
    assert auth.is_read_only(auth.user_for_key(key)) is False
    with django_assert_num_queries(0):  # read with the token, not once per request
        auth.is_read_only(auth.user_for_key(key))
    auth.ensure_service_account("gaia-audio", read_only=True)
    assert auth.is_read_only(auth.user_for_key(key)) is True
    assert client.post("/gpu/acquire", body, format="json").status_code == 403
    auth.ensure_service_account("gaia-audio", read_only=False)
    assert auth.is_read_only(auth.user_for_key(key)) is False
