"""Who is calling: service accounts (API tokens), operators (staff sessions), read-only accounts,
and, only where configured, tokenless callers from trusted networks. What each may do is
gaiaorch.rights.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cached_property
from importlib import import_module
from types import SimpleNamespace
from typing import Any, cast

from django.conf import settings
from django.contrib import auth
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import models, transaction
from django.db.models.base import ModelState
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.utils import timezone
from rest_framework.authentication import BaseAuthentication, TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed

from gaiaorch import config, event_types, events
from gaiaorch.config import TrustedNetwork
from gaiaorch.models import ApiToken

SERVICE_GROUP = "service-accounts"
READ_ONLY_GROUP = "read-only-accounts"  # reads everything, writes nothing (gaiaorch.rights)
KEY_BYTES = 20  # 40 hex characters, as DRF's keys were
PREFIX_CHARS = 8


def actor_name(user) -> str:
    return user.get_username() if user and user.is_authenticated else "anonymous"


# --- API tokens ------------------------------------------------------------------------------


def digest_of(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def issue_token(user, actor: str = "system") -> str:
    """A new key for the account, replacing its old one. The only time anyone sees the key."""
    key = secrets.token_hex(KEY_BYTES)
    with transaction.atomic():
        _, created = ApiToken.objects.update_or_create(
            user=user,
            defaults={"digest": digest_of(key), "prefix": key[:PREFIX_CHARS], "created_at": timezone.now()},
        )
        name = user.get_username()
        event_types.record(
            events.ACCOUNT_TOKEN_ISSUED,
            f"{name} has a new API token ({key[:PREFIX_CHARS]}…)"
            + ("" if created else "; its old key stopped working"),
            actor=actor,
            data={"account": name, "prefix": key[:PREFIX_CHARS], "rotated": not created},
            subject=("account", name),
        )
    return key


# A token found is remembered this long, so a service calling many times a second costs one
# token -> account lookup per this period instead of one per request. Any change to a token or an
# account in this process forgets them all at once (a revoked or rotated key stops working for the
# next request); a change made by another process (a management command) reaches this one within
# this bound.
TOKEN_CACHE_SECONDS = 2.0
_found: dict[str, tuple[float, ApiToken]] = {}
_found_lock = threading.Lock()  # why: the serving threads read and fill the cache at once
_generation = 0  # bumped by every forget: a lookup begun before one must not store what it read


def forget_tokens(**kwargs) -> None:
    """Forget every remembered token, now and again when the current transaction commits (a
    lookup on another connection may read the old row until then)."""
    _forget()
    transaction.on_commit(_forget)


def _forget() -> None:
    global _generation
    with _found_lock:
        _found.clear()
        _generation += 1


for _model in (ApiToken, get_user_model()):
    post_save.connect(forget_tokens, sender=_model, dispatch_uid=f"forget_tokens_saved_{_model.__name__}")
    post_delete.connect(forget_tokens, sender=_model, dispatch_uid=f"forget_tokens_deleted_{_model.__name__}")
m2m_changed.connect(
    forget_tokens, sender=get_user_model().groups.through, dispatch_uid="forget_tokens_groups"
)


def revoke_token(user, actor: str = "system") -> bool:
    """Take the account's token away (its key stops working, none replaces it); False when it had none."""
    with transaction.atomic():
        # why: two revocations (or a revocation and a rotation) of one account must not both report it.
        token = ApiToken.objects.select_for_update().filter(user=user).first()
        if token is None:
            return False
        token.delete()
        name = user.get_username()
        event_types.record(
            events.ACCOUNT_TOKEN_REVOKED,
            f"{name}'s API token ({token.prefix}…) was revoked",
            actor=actor,
            data={"account": name, "prefix": token.prefix},
            subject=("account", name),
        )
    return True


def token_for_key(key: str) -> ApiToken | None:
    """The token of an active account with this key, or None: the one lookup every caller uses
    (DRF views, the async /gpu/wait, the WebSocket consumer). Each caller gets its own copy."""
    if not key:
        return None
    digest = digest_of(key)
    now = time.monotonic()
    with _found_lock:
        generation = _generation
        found = _found.get(digest)
    if found is not None and found[0] > now:
        return _copy(found[1])
    token = ApiToken.objects.select_related("user").filter(digest=digest).first()
    if token is None or not token.user.is_active:
        return None
    token.user.read_only_account = _in_read_only_group(token.user)  # type: ignore[attr-defined]  # remembered with the token
    with _found_lock:
        if generation == _generation:
            _found[digest] = (now + TOKEN_CACHE_SECONDS, token)
    return _copy(token)


def _copy(token: ApiToken) -> ApiToken:
    """A request may set attributes on its user (DRF, rights): it must not see another's."""
    mine = _shallow_copy(token)
    mine.user = _shallow_copy(token.user)
    return mine


def _shallow_copy(instance: models.Model) -> Any:
    """copy.copy of a model instance without its pickling round trips: its fields, and a state of
    its own holding the relations it has cached (Model.__getstate__ copies that state by reducing
    it, which costs more than the rest of the copy)."""
    clone = models.Model.__new__(type(instance))
    clone.__dict__.update(instance.__dict__)
    state = clone._state = ModelState()
    state.__dict__.update(instance._state.__dict__)
    state.fields_cache = dict(instance._state.fields_cache)
    return clone


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


def operator_for_session(session_key: str):
    """The staff user logged in under this session key, or None: logged out, expired, password
    changed, deactivated or no longer staff (Django's own session checks, as for a page)."""
    if not session_key:
        return None
    session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    user = auth.get_user(SimpleNamespace(session=session))  # type: ignore[arg-type]  # reads only .session
    return user if user.is_authenticated and user.is_staff else None


@transaction.atomic
def ensure_service_account(
    name: str, rotate: bool = False, read_only: bool | None = None, actor: str = "system"
) -> str | None:
    """Create (or find) the account of one GAIA service. Returns its new key when one was made
    (a new account, or `rotate`); None when it already has one, which cannot be shown again.
    `read_only` True or False makes the account read-only or writable; None leaves it as it is.
    Each change writes its event: the account created, its read-only mark, its token."""
    user, created = get_user_model().objects.get_or_create(username=name, defaults={"is_active": True})
    user.set_unusable_password()
    user.save(update_fields=["password"])
    user.groups.add(Group.objects.get_or_create(name=SERVICE_GROUP)[0])
    if read_only is not None:
        set_read_only(user, read_only, actor=actor, announce=not created)
    if created:
        event_types.record(
            events.ACCOUNT_CREATED,
            f"Service account {name} created" + (" (read-only)" if read_only else ""),
            actor=actor,
            data={"account": name, "read_only": bool(read_only)},
            subject=("account", name),
        )
    if rotate or not ApiToken.objects.filter(user=user).exists():
        return issue_token(user, actor=actor)
    return None


def set_read_only(user, read_only: bool, actor: str = "system", announce: bool = True) -> bool:
    """A read-only account is never an operator: it could otherwise write through the console.
    Returns whether it changed; a change writes its event (unless `announce` is False: the
    account's creation tells it)."""
    group = Group.objects.get_or_create(name=READ_ONLY_GROUP)[0]
    with transaction.atomic():
        changed = is_read_only(user) != read_only
        if read_only:
            user.groups.add(group)
            get_user_model().objects.filter(pk=user.pk).update(is_staff=False)
            forget_tokens()  # an update sends no post_save
        else:
            user.groups.remove(group)
        if changed and announce:
            name = user.get_username()
            event_types.record(
                events.ACCOUNT_READ_ONLY_CHANGED,
                f"{name} is now {'read-only' if read_only else 'allowed to write'}",
                actor=actor,
                data={"account": name, "read_only": read_only},
                subject=("account", name),
            )
    return changed


def is_read_only(user) -> bool:
    remembered = getattr(user, "read_only_account", None)  # read with its token (token_for_key)
    return remembered if remembered is not None else _in_read_only_group(user)


def _in_read_only_group(user) -> bool:
    return user.groups.filter(name=READ_ONLY_GROUP).exists()


# --- tokenless callers from trusted networks -------------------------------------------------


class TrustedCaller:
    """A request without any credential from a trusted network (orchestrator.trusted_networks).

    It has no name of its own. It acts as the service its request names, which the rights check
    that reads that name records here (`act_as`: an acquire's requester, a lease's requester, a
    handoff's destination); a request that names none acts as its network's `acts_as` account.
    """

    is_authenticated = True
    is_anonymous = False
    is_active = True
    pk = None

    def __init__(self, client: str, trusted: TrustedNetwork):
        self.client, self.trusted, self.named = client, trusted, ""

    def act_as(self, service: str) -> None:
        self.named = self.named or service  # the first name wins: one request acts as one service

    @cached_property
    def account(self):
        """The `acts_as` account's row (operator or not, read-only or not), None when it has none."""
        name = self.trusted.acts_as
        return get_user_model().objects.filter(username=name, is_active=True).first() if name else None

    @property
    def is_staff(self) -> bool:
        return not self.named and self.account is not None and self.account.is_staff

    def get_username(self) -> str:
        return self.named or self.trusted.acts_as

    def __str__(self) -> str:
        return f"a tokenless caller at {self.client}"


def client_address(peer: str | None, forwarded_for: str = "") -> str | None:
    """The caller's address: the TCP peer (the ASGI scope's client), or, when that peer is one of
    orchestrator.trusted_proxies, the last X-Forwarded-For address that is not a trusted proxy.
    X-Forwarded-For is never read from any other peer: anyone can write it."""
    proxies = config.current().orchestrator.trusted_proxies
    address = _address(peer)
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    while address is not None and any(address in proxy for proxy in proxies) and hops:
        address = _address(hops.pop())
    return str(address) if address is not None else None


def _address(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text or "")
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:172.18.0.5 on a dual-stack socket
    return mapped or address


def trusted_network_of(client: str | None) -> TrustedNetwork | None:
    address = _address(client)
    return config.current().orchestrator.trusted_network_of(address) if address else None


def trusted_caller(request) -> TrustedCaller | None:
    """The tokenless caller of a Django request from a trusted network, or None: trusted networks
    are off, the request carries a credential or an Origin (a browser page, which could be any
    site's: a page never acts without its own credential), or its address is not trusted."""
    if not config.current().orchestrator.trusted_networks:
        return None
    if "Authorization" in request.headers or "Origin" in request.headers:
        return None
    client = client_address(request.META.get("REMOTE_ADDR"), request.headers.get("X-Forwarded-For", ""))
    trusted = trusted_network_of(client)
    if trusted is None:
        return None
    client = cast(str, client)  # trusted_network_of gives None for no address
    mark_unauthenticated(client)
    return TrustedCaller(client, trusted)


class TrustedNetworkAuthentication(BaseAuthentication):
    """DRF's last authenticator: a request that no token or session authenticated, from a trusted
    network. A wrong token is refused before this runs, never retried as tokenless."""

    def authenticate(self, request):
        caller = trusted_caller(request._request)
        return (caller, None) if caller else None


def caller_for_request(request):
    """For plain (async) Django views: the account of an `Authorization: Token <key>` header,
    else a tokenless caller from a trusted network, else None."""
    scheme, _, key = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() == "token":
        return user_for_key(key.strip())
    return trusted_caller(request)


def tokenless_warning() -> str:
    """What /ready and the operator dashboard say while trusted networks are on ("" when off)."""
    trusted = config.current().orchestrator.trusted_networks
    if not trusted:
        return ""
    listed = ", ".join(
        f"{entry.network} (as {entry.acts_as})" if entry.acts_as else str(entry.network) for entry in trusted
    )
    return (
        f"Writes without a token are accepted from {listed} (orchestrator.trusted_networks): "
        "anything that can send from there acts as a GAIA service."
    )


# --- the audit mark of a tokenless request -------------------------------------------------


@dataclass
class RequestAudit:
    """What events written while serving one request say about its caller."""

    tokenless_client: str = ""


_request_audit: ContextVar[RequestAudit | None] = ContextVar("gaiaorch_request_audit", default=None)


@contextmanager
def audit_scope() -> Iterator[RequestAudit]:
    """One request's audit (gaiaorch.middleware.AuditMiddleware). The threads that serve it
    (sync views, sync_to_async) copy the context, so they share this one object."""
    token = _request_audit.set(RequestAudit())
    try:
        yield cast(RequestAudit, _request_audit.get())  # the one just set
    finally:
        _request_audit.reset(token)


def mark_unauthenticated(client: str) -> None:
    audit = _request_audit.get()
    if audit is not None:
        audit.tokenless_client = client


def audit_marks() -> dict[str, object]:
    """Added to the data of every event written while serving a tokenless request."""
    audit = _request_audit.get()
    if audit is None or not audit.tokenless_client:
        return {}
    return {"authenticated": False, "client": audit.tokenless_client}
