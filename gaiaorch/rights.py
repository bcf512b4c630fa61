"""What each caller may do, and the checks every endpoint makes (docs/api.md#rights).

- An operator (a staff user) may do everything.
- A service account acts for its own name: its leases and queue entries, and the handoffs it is
  the source or destination of. Anything more is a right granted to it by name under `grants:`
  (gaiaorch.config.RIGHTS).
- A read-only account (`service_account NAME --read-only`) reads and never writes.
- A tokenless caller from a trusted network (gaiaorch.auth.TrustedCaller) acts as the service its
  request names, else as its network's `acts_as` account, and has that one's rights.

A refusal is a 403 whose `missing_right` names what was missing (a right of RIGHTS, `write` or
`operator`), or a 401 for a tokenless caller whose request names nobody it could act as.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from rest_framework.exceptions import NotAuthenticated
from rest_framework.permissions import SAFE_METHODS, BasePermission

from gaiaorch import config
from gaiaorch.auth import TrustedCaller, caller_for_request, is_read_only
from gaiaorch.config import RIGHTS, STACK_STRATEGY, Config, HandoffType
from gaiaorch.errors import Forbidden

WRITE = "write"  # what a read-only account lacks
OPERATOR = "operator"  # acting for another requester, revoking a lease
ANY_HANDOFF = "any_handoff"
ORACLE_FALLBACK = "oracle_fallback"


@dataclass(frozen=True)
class Principal:
    """Who a caller acts as, for one check."""

    name: str
    operator: bool = False
    read_only: bool = False


def principal(user) -> Principal:
    if not isinstance(user, TrustedCaller):
        return Principal(user.get_username(), user.is_staff, is_read_only(user))
    if user.named:
        return Principal(user.named)
    if user.account is not None:
        return principal(user.account)
    if user.trusted.acts_as:  # a name without an account: only what grants: gives it
        return Principal(user.trusted.acts_as)
    raise NotAuthenticated(
        f"A request without a token from {user.trusted.network} acts as the service it names, and "
        "this one names none: send a token, or set acts_as on that network in "
        "orchestrator.trusted_networks."
    )


def refuse_read_only(who: Principal) -> None:
    if who.read_only:
        raise Forbidden(
            f"{who.name} is a read-only account: it reads and never writes.",
            missing_right=WRITE,
            actor=who.name,
        )


def require(user, right: str) -> None:
    """An operator, or an account granted `right` (403 naming it otherwise)."""
    who = principal(user)
    refuse_read_only(who)
    if who.operator:
        return
    refuse_ungranted(config.current(), who, right)


def refuse_ungranted(stack: Config, who: Principal, right: str) -> None:
    if not stack.granted(who.name, right):
        raise Forbidden(
            f"{who.name} may not {RIGHTS[right]}: that needs the {right} right "
            f"(grants: {{{who.name}: [{right}]}} in the configuration) or an operator.",
            missing_right=right,
            actor=who.name,
        )


def require_operator(user) -> None:
    who = principal(user)
    refuse_read_only(who)
    if not who.operator:
        raise Forbidden(f"{who.name} is not an operator.", missing_right=OPERATOR, actor=who.name)


def require_acts_for(user, requester: str) -> None:
    """A lease action for `requester`: the requester itself, or an operator."""
    if isinstance(user, TrustedCaller):
        user.act_as(requester)
    who = principal(user)
    refuse_read_only(who)
    if not (who.operator or who.name == requester):
        raise Forbidden(
            f"{who.name} may not act for {requester}: only an operator acts for another requester.",
            missing_right=OPERATOR,
            requester=requester,
            actor=who.name,
        )


def own_requester(user) -> str | None:
    """Whose lease a release without a lease id ends: the caller's own, or (None) the holder's
    for an operator."""
    who = principal(user)
    refuse_read_only(who)
    return None if who.operator else who.name


def require_handoff(user, kind: HandoffType) -> None:
    """Starting or cancelling a handoff: its source or destination service, an account granted
    any_handoff, or an operator; a type that stops or starts whole stacks also needs the stack
    rights it exercises (live_to_candidate: live_stop and candidate_start)."""
    if isinstance(user, TrustedCaller):
        user.act_as(kind.destination)
    who = principal(user)
    refuse_read_only(who)
    if who.operator:
        return
    stack = config.current()
    if who.name not in (kind.source, kind.destination) and not stack.granted(who.name, ANY_HANDOFF):
        raise Forbidden(
            f"{who.name} is neither the source nor the destination of {kind.name}, and may not "
            f"{RIGHTS[ANY_HANDOFF]} without the {ANY_HANDOFF} right.",
            missing_right=ANY_HANDOFF,
            actor=who.name,
            handoff_type=kind.name,
        )
    for right in stack_rights(stack, kind):
        refuse_ungranted(stack, who, right)


def stack_rights(stack: Config, kind: HandoffType) -> list[str]:
    """The container rights a handoff type exercises: stopping the source's stack, starting the
    destination's (named like the operations: live_stop, candidate_start)."""
    rights = []
    if kind.release == STACK_STRATEGY:
        rights.append(f"{stack.services[kind.source].stack}_stop")
    if kind.signal == STACK_STRATEGY:
        rights.append(f"{stack.services[kind.destination].stack}_start")
    return rights


def writer_for_request(request):
    """For plain (async) Django views that write: the caller (gaiaorch.auth.caller_for_request),
    None when there is none (401), 403 for a read-only account."""
    user = caller_for_request(request)
    if user is not None and not isinstance(user, TrustedCaller):
        refuse_read_only(principal(user))
    return user


# --- DRF permissions --------------------------------------------------------------------------


def is_safe(request) -> bool:
    return request.method in SAFE_METHODS


class ReadOpenWriteAuthenticated(BasePermission):
    """Reads are open when settings.OPEN_READS (status pages for gaia-web), else any caller's;
    writes need a caller that may write (each endpoint then checks its own right)."""

    def has_permission(self, request, view) -> bool:
        if is_safe(request) and settings.OPEN_READS:
            return True
        if not (request.user and request.user.is_authenticated):
            return False  # DRF answers 401
        if not is_safe(request) and not isinstance(request.user, TrustedCaller):
            refuse_read_only(principal(request.user))
        return True


class IsOperator(BasePermission):
    """Operator-only actions (revoke)."""

    def has_permission(self, request, view) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        require_operator(request.user)
        return True
