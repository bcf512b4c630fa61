"""POST /gpu/wait: a long-poll that holds no thread and no database connection while it waits.

A plain async Django view (DRF's views are synchronous): it authenticates the token itself and
answers with the same JSON shapes as the DRF views. The body is either an acquire body (the entry
is created, or found if the requester already has one) or `{lease_id, timeout_seconds}`.

Granted within the timeout: 200, and the grant is claimed. Not granted: 202 with the entry's
queue position; the entry stays queued and lives on for `leases.waiter_grace_seconds` after the
wait, so a client calling again keeps its place. A caller that hangs up withdraws the entry that
its own call made (even while it was being made), unless the body said `keep_queued: true` or the
requester asked again meanwhile. An entry that ends otherwise during the wait (revoked, expired,
cancelled) is a 409.
"""

from __future__ import annotations

import asyncio
from typing import Any

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiResponse, PolymorphicProxySerializer, extend_schema
from rest_framework.views import APIView

from gaiaorch import rights
from gaiaorch.auth import HashedTokenAuthentication, actor_name
from gaiaorch.errors import DomainError, InvalidRequest, body_too_large
from gaiaorch.middleware import DeferredAnswer, may_defer, parse_json
from gaiaorch.serializers import ErrorSerializer
from gaiaorch_client import contract
from leases import services, wakeups
from leases.api.serializers import (
    GrantedSerializer,
    QueuedSerializer,
    WaitAcquireSerializer,
    WaitForLeaseSerializer,
)
from leases.api.views import acquire_body, ensure_acts_for, lease_for
from leases.models import LeaseStatus


def _error(code: str, detail: str, http_status: int, **context: Any) -> JsonResponse:
    return JsonResponse({"error": code, "detail": detail, **context}, status=http_status)


def _body(request: HttpRequest) -> dict[str, Any]:
    try:
        data = parse_json(request.body or b"{}")
    except RequestDataTooBig:
        raise body_too_large() from None
    if not isinstance(data, dict):
        raise InvalidRequest("The body must be a JSON object.", code="malformed_request")
    return data


def _params(data: dict[str, Any]) -> dict[str, Any]:
    serializer_class = WaitForLeaseSerializer if "lease_id" in data else WaitAcquireSerializer
    serializer = serializer_class(data=data)
    if not serializer.is_valid():
        raise InvalidRequest("The request has invalid fields.", fields=serializer.errors)
    return dict(serializer.validated_data)


def _enter(user, params: dict[str, Any]) -> services.AcquireResult:
    """Find or create the queue entry this wait is about; its owner is here."""
    if "lease_id" in params:
        lease = lease_for(user, params["lease_id"])
        return services.attend(lease.id, gpu=lease.gpu)
    ensure_acts_for(user, params["requester"])
    return services.acquire(**contract.acquire_arguments(params), actor=actor_name(user))


async def _entered(user, params: dict[str, Any]) -> services.AcquireResult:
    """_enter, finished even when the caller hangs up meanwhile: then its entry is given up as a
    hang-up during the wait gives it up (no ghost made between the two)."""
    entering = asyncio.ensure_future(sync_to_async(_enter)(user, params))
    try:
        return await asyncio.shield(entering)
    except asyncio.CancelledError:
        entry = await entering
        await services.give_up(entry, keep_queued=params.get("keep_queued", False), actor=actor_name(user))
        raise


def _answer(result: services.AcquireResult, timed_out_after: float) -> JsonResponse:
    if result.lease.status in (LeaseStatus.ACTIVE, LeaseStatus.WAITING):
        body, code = acquire_body(result)
        if not result.granted:
            body["message"] = (
                f"Not granted within {timed_out_after:g} s; still number {result.queue_position} "
                "in the queue (call again to keep the place)."
            )
        return JsonResponse(body, status=code)
    lease = result.lease
    return _error(
        "conflict", f"Lease {lease.id} is {lease.status}.", 409, lease_id=str(lease.id), status=lease.status
    )


@csrf_exempt  # token authentication only, never cookies: there is no session to forge
async def wait(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return _error("method_not_allowed", f'Method "{request.method}" not allowed.', 405)
    try:
        user = await sync_to_async(rights.writer_for_request)(request)
        if user is None:
            response = _error("not_authenticated", "A valid service token is required.", 401)
            response["WWW-Authenticate"] = "Token"
            return response
        params = _params(_body(request))
        entry = await _entered(user, params)
    except (DomainError, DatabaseError) as exc:
        return _refusal(exc)
    if entry.lease.status != LeaseStatus.WAITING:
        return _answer(entry, params["timeout_seconds"])
    waited = _waited(entry, params, actor_name(user))
    if not may_defer(request):
        return await waited
    # Answered once the wait ends; the middleware's response steps run meanwhile.
    return DeferredAnswer(request, waited)


async def _waited(entry: services.AcquireResult, params: dict[str, Any], actor: str) -> JsonResponse:
    try:
        result = await services.wait_out(
            entry,
            timeout_seconds=params["timeout_seconds"],
            keep_queued=params.get("keep_queued", False),
            actor=actor,
        )
    except (DomainError, DatabaseError) as exc:
        return _refusal(exc)
    return _answer(result, params["timeout_seconds"])


def _refusal(exc: DomainError | DatabaseError) -> JsonResponse:
    if isinstance(exc, DomainError):
        return JsonResponse(exc.body(), status=exc.status_code)
    return _error("database_unavailable", f"The database refused the request: {exc}", 503)


wait.allowed_methods = ["POST"]  # type: ignore[attr-defined]  # read by the endpoint index (GET /)


def one_thread_for_waits(app):
    """ASGI middleware (console.asgi): /gpu/wait requests run their synchronous steps on the one
    thread all waits of the process share (wakeups.THREAD).

    Django gives every request a thread of its own for its synchronous steps (the request
    signals, the middleware hooks, the view's database calls) and keeps it, with its database
    connection, until the request ends: a long-poll would hold one of each per open wait. The
    steps of a wait are short, so one thread serves them all, one at a time.
    """
    path = reverse("gpu-wait")
    open_requests = 0  # on the event loop's thread only

    async def serve(scope, receive, send):
        nonlocal open_requests
        if scope["type"] != "http" or scope.get("path") != path:
            return await app(scope, receive, send)
        open_requests += 1
        try:
            async with ThreadSensitiveContext(executor=wakeups.THREAD):
                return await app(scope, receive, send)
        finally:
            open_requests -= 1
            if not open_requests:
                wakeups.close_connection()

    return serve


# --- OpenAPI ----------------------------------------------------------------------------------
# drf-spectacular documents DRF views only, and this one is a plain async view; a DRF view that
# is never routed carries its description, and a preprocessing hook puts it at /gpu/wait.


class WaitDocumentation(APIView):
    authentication_classes = [HashedTokenAuthentication]  # tokens only: the view reads no session

    @extend_schema(
        operation_id="gpu_wait",
        summary="Wait for a GPU (long-poll; holds no thread while it waits)",
        description=__doc__,
        request=PolymorphicProxySerializer(
            component_name="WaitRequest",
            serializers=[WaitAcquireSerializer, WaitForLeaseSerializer],
            resource_type_field_name=None,
        ),
        responses={
            200: OpenApiResponse(GrantedSerializer, "granted within the timeout"),
            202: OpenApiResponse(QueuedSerializer, "not granted in time: still queued, with its position"),
            400: OpenApiResponse(ErrorSerializer, "invalid_request, malformed_request or body_too_large"),
            401: OpenApiResponse(ErrorSerializer, "not_authenticated: no valid service token"),
            403: OpenApiResponse(
                ErrorSerializer, "forbidden: another requester's name or lease, or a read-only account"
            ),
            404: OpenApiResponse(ErrorSerializer, "not_found: no such lease_id"),
            409: OpenApiResponse(
                ErrorSerializer, "conflict: the lease ended (revoked, expired, cancelled) meanwhile"
            ),
            503: OpenApiResponse(ErrorSerializer, "database_unavailable"),
        },
    )
    def post(self, request):  # documentation only: `wait` above answers /gpu/wait
        raise NotImplementedError


def document_wait(endpoints, **kwargs):
    """drf-spectacular preprocessing hook (SPECTACULAR_SETTINGS['PREPROCESSING_HOOKS'])."""
    path = reverse("gpu-wait")
    return [*endpoints, (path, f"^{path.lstrip('/')}$", "POST", WaitDocumentation.as_view())]
