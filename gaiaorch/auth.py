"""Who may call what: service accounts (DRF tokens) and operators (staff sessions)."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from rest_framework.authtoken.models import Token
from rest_framework.permissions import SAFE_METHODS, BasePermission

SERVICE_GROUP = "service-accounts"


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


@transaction.atomic
def ensure_service_account(name: str, rotate: bool = False) -> str:
    """Create (or find) the account of one GAIA service and return its API token."""
    user, _ = get_user_model().objects.get_or_create(username=name, defaults={"is_active": True})
    user.set_unusable_password()
    user.save(update_fields=["password"])
    user.groups.add(Group.objects.get_or_create(name=SERVICE_GROUP)[0])
    if rotate:
        Token.objects.filter(user=user).delete()
    token, _ = Token.objects.get_or_create(user=user)
    return token.key


def user_for_token_header(header: str):
    """The active user named by an `Authorization: Token <key>` header, or None.

    For plain (async) Django views that cannot use DRF's authentication classes.
    """
    scheme, _, key = header.strip().partition(" ")
    if scheme.lower() != "token" or not key.strip():
        return None
    token = Token.objects.select_related("user").filter(key=key.strip()).first()
    return token.user if token and token.user.is_active else None
