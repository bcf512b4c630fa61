"""POST /gpu/wait: a long-poll that holds no thread while it waits.

A plain async Django view (DRF's views are synchronous): it authenticates the token itself and
answers with the same JSON shapes as the DRF views. The body is either an acquire body (the entry
is created, or found if the requester already has one) or `{lease_id, timeout_seconds}`.

No ghost entries: when the wait ends without a grant (timeout or the client hanging up), an entry
that THIS call created is withdrawn (status cancelled) unless the body said `keep_queued: true`.
An entry that existed before the call (from /gpu/acquire, or a wait with keep_queued) stays queued
and the 202 answer gives its position.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError
from django.http import HttpRequest, JsonResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiResponse, PolymorphicProxySerializer, extend_schema
from rest_framework.views import APIView

from gaiaorch import rights
from gaiaorch.auth import HashedTokenAuthentication, actor_name
from gaiaorch.errors import DomainError, InvalidRequest, body_too_large
from gaiaorch.middleware import parse_json
from gaiaorch.serializers import ErrorSerializer
from leases import services
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
    """Find or create the queue entry this wait is about."""
    if "lease_id" in params:
        lease = lease_for(user, params["lease_id"])
        return services.check(lease.id)
    ensure_acts_for(user, params["requester"])
    acquire = {name: params[name] for name in ("requester", "reason", "gpu", "priority", "ttl_seconds")}
    return services.acquire(**acquire, memory_mib=params["memory_mib"], actor=actor_name(user))


def _answer(result: services.AcquireResult, timed_out_after: float, withdrawn: bool) -> JsonResponse:
    if result.lease.status in (LeaseStatus.ACTIVE, LeaseStatus.WAITING) or withdrawn:
        body, code = acquire_body(result)
        if not result.granted:
            body["message"] = f"Not granted within {timed_out_after:g} s; " + (
                f"still number {result.queue_position} in the queue."
                if result.queue_position
                else "the queue entry was withdrawn."
            )
        return JsonResponse(body, status=code)
    lease = result.lease
    return _error(
        "conflict", f"Lease {lease.id} is {lease.status}.", 409, lease_id=str(lease.id), status=lease.status
    )


@csrf_exempt  # token authentication only, never cookies: there is no session to forge
async def wait(request: HttpRequest) -> JsonResponse:
    if request.method != "POST":
        return _error("method_not_allowed", f'Method "{request.method}" not allowed.', 405)
    try:
        user = await sync_to_async(rights.writer_for_request)(request)
        if user is None:
            response = _error("not_authenticated", "A valid service token is required.", 401)
            response["WWW-Authenticate"] = "Token"
            return response
        params = _params(_body(request))
        entry = await sync_to_async(_enter)(user, params)
        result, withdrawn = await services.wait_out(
            entry,
            timeout_seconds=params["timeout_seconds"],
            keep_queued=params.get("keep_queued", False),
            actor=actor_name(user),
        )
        return _answer(result, params["timeout_seconds"], withdrawn)
    except DomainError as exc:
        return JsonResponse(exc.body(), status=exc.status_code)
    except DatabaseError as exc:
        return _error("database_unavailable", f"The database refused the request: {exc}", 503)


wait.allowed_methods = ["POST"]  # read by the endpoint index (GET /)


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
            202: OpenApiResponse(QueuedSerializer, "not granted in time: still queued, or withdrawn"),
            400: OpenApiResponse(ErrorSerializer, "invalid_request, malformed_request or body_too_large"),
            401: OpenApiResponse(ErrorSerializer, "not_authenticated: no valid service token"),
            403: OpenApiResponse(
                ErrorSerializer, "forbidden: another requester's name or lease, or a read-only account"
            ),
            404: OpenApiResponse(ErrorSerializer, "not_found: no such lease_id"),
            409: OpenApiResponse(ErrorSerializer, "conflict: the lease ended (revoked, expired) meanwhile"),
            503: OpenApiResponse(ErrorSerializer, "database_unavailable"),
        },
    )
    def post(self, request):  # documentation only: `wait` above answers /gpu/wait
        raise NotImplementedError


def document_wait(endpoints, **kwargs):
    """drf-spectacular preprocessing hook (SPECTACULAR_SETTINGS['PREPROCESSING_HOOKS'])."""
    path = reverse("gpu-wait")
    return [*endpoints, (path, f"^{path.lstrip('/')}$", "POST", WaitDocumentation.as_view())]
