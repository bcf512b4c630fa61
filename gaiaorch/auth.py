"""Who may call what: service accounts (API tokens) and operators (staff sessions)."""

from __future__ import annotations

import hashlib
import secrets
from importlib import import_module
from types import SimpleNamespace

from django.conf import settings
from django.contrib import auth
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import SAFE_METHODS, BasePermission

from gaiaorch.models import ApiToken

SERVICE_GROUP = "service-accounts"
KEY_BYTES = 20  # 40 hex characters, as DRF's keys were
PREFIX_CHARS = 8


class ReadOpenWriteAuthenticated(BasePermission):
    """Reads are open when settings.OPEN_READS (status pages for gaia-web); writes never are."""

    def has_permission(self, request, view) -> bool:
        if is_safe(request) and settings.OPEN_READS:
            return True
        return bool(request.user and request.user.is_authenticated)


class IsOperator(BasePermission):
    """Operator-only actions (revoke, stack operations from the console)."""

    def has_permission(self, request, view) -> bool:
        return bool(request.user and request.user.is_authenticated and request.user.is_staff)


def is_safe(request) -> bool:
    return request.method in SAFE_METHODS


def acts_for(user, requester: str) -> bool:
    """A service account acts only for its own name; staff act for anyone."""
    return user.is_authenticated and (user.is_staff or user.get_username() == requester)


def actor_name(user) -> str:
    return user.get_username() if user and user.is_authenticated else "anonymous"


# --- API tokens ------------------------------------------------------------------------------


def digest_of(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def issue_token(user) -> str:
    """A new key for the account, replacing its old one. The only time anyone sees the key."""
    key = secrets.token_hex(KEY_BYTES)
    ApiToken.objects.update_or_create(
        user=user,
        defaults={"digest": digest_of(key), "prefix": key[:PREFIX_CHARS], "created_at": timezone.now()},
    )
    return key


def token_for_key(key: str) -> ApiToken | None:
    """The token of an active account with this key, or None: the one lookup every caller uses
    (DRF views, the async /gpu/wait, the WebSocket consumer)."""
    if not key:
        return None
    token = ApiToken.objects.select_related("user").filter(digest=digest_of(key)).first()
    return token if token and token.user.is_active else None


def user_for_key(key: str):
    token = token_for_key(key)
    return token.user if token else None


class HashedTokenAuthentication(TokenAuthentication):
    """DRF's `Authorization: Token <key>` scheme, looked up by the key's digest."""

    def authenticate_credentials(self, key: str):
        token = token_for_key(key)
        if token is None:
            raise AuthenticationFailed("Invalid token.")
        return token.user, token


def user_for_token_header(header: str):
    """The active user named by an `Authorization: Token <key>` header, or None.

    For plain (async) Django views that cannot use DRF's authentication classes.
    """
    scheme, _, key = header.strip().partition(" ")
    if scheme.lower() != "token":
        return None
    return user_for_key(key.strip())


def operator_for_session(session_key: str):
    """The staff user logged in under this session key, or None: logged out, expired, password
    changed, deactivated or no longer staff (Django's own session checks, as for a page)."""
    if not session_key:
        return None
    session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    user = auth.get_user(SimpleNamespace(session=session))
    return user if user.is_authenticated and user.is_staff else None


@transaction.atomic
def ensure_service_account(name: str, rotate: bool = False) -> str | None:
    """Create (or find) the account of one GAIA service. Returns its new key when one was made
    (a new account, or `rotate`); None when it already has one, which cannot be shown again."""
    user, _ = get_user_model().objects.get_or_create(username=name, defaults={"is_active": True})
    user.set_unusable_password()
    user.save(update_fields=["password"])
    user.groups.add(Group.objects.get_or_create(name=SERVICE_GROUP)[0])
    if rotate or not ApiToken.objects.filter(user=user).exists():
        return issue_token(user)
    return None
