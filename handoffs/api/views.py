"""Thin views: parse, check who may act, call one service, serialize."""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action, api_view
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.encoders import JSONEncoder

from gaiaorch import config, rights
from gaiaorch.auth import actor_name
from gaiaorch.errors import DomainError, InvalidRequest, NotFound
from gaiaorch.serializers import render
from handoffs import services
from handoffs.api.serializers import (
    HandoffSerializer,
    StartedSerializer,
    StartSeedSerializer,
    StartSerializer,
    StatusSerializer,
    WaitedSerializer,
    WaitSerializer,
)
from handoffs.models import Handoff, Phase


def _require_party(request: Request, handoff_type: str) -> None:
    """Who may start or cancel a handoff of this type (gaiaorch.rights.require_handoff); an
    unknown type is refused by the service with 404."""
    kind = config.current().handoffs.type_named(handoff_type)
    if kind:
        rights.require_handoff(request.user, kind)


def _started(handoff: Handoff) -> Response:
    body = {
        "success": True,
        "handoff_id": str(handoff.id),
        "handoff_type": handoff.type,
        "status_url": f"/handoff/{handoff.id}/status",
        "phase": handoff.phase,
        "source": handoff.source,
        "destination": handoff.destination,
        "message": f"Handoff {handoff.type} started: {handoff.source} → {handoff.destination}",
    }
    return Response(render(StartedSerializer, body), status=status.HTTP_202_ACCEPTED)


def start_from_request(request: Request, handoff_type: str, serializer_class=StartSeedSerializer) -> Response:
    params = serializer_class(data=request.data or {})
    params.is_valid(raise_exception=True)
    fields = dict(params.validated_data)
    handoff_type = fields.pop("type", handoff_type)
    _require_party(request, handoff_type)
    handoff = services.start(type=handoff_type, actor=actor_name(request.user), **fields)
    return _started(handoff)


REFUSALS = {
    409: OpenApiResponse(
        description="handoff_active (names the running handoff) or not_holder (names the holder)"
    ),
    503: OpenApiResponse(description="telemetry_unavailable: freed VRAM cannot be verified"),
}
WAIT_PARAMETERS = [
    OpenApiParameter(
        "wait",
        OpenApiTypes.FLOAT,
        description="seconds to wait for the handoff's end, 0 to 3600 (default: the configured "
        "default wait, 0 unless set)",
    ),
    OpenApiParameter(
        "Prefer", OpenApiTypes.STR, OpenApiParameter.HEADER, description="wait=SECONDS, as ?wait= (RFC 7240)"
    ),
]
HANDOFF_TYPE_PARAMETER = OpenApiParameter(
    "handoff_type",
    OpenApiTypes.STR,
    OpenApiParameter.PATH,
    description="A configured handoff type, e.g. prime-to-study or study-to-prime (the seed's)",
)


@extend_schema(
    request=StartSeedSerializer,
    parameters=[HANDOFF_TYPE_PARAMETER, *WAIT_PARAMETERS],
    responses={
        200: WaitedSerializer,
        202: StartedSerializer,
        **REFUSALS,
        404: OpenApiResponse(description="unknown_handoff_type (names the known ones)"),
        409: OpenApiResponse(
            description="handoff_active (names the running handoff), not_holder (names the holder), "
            "or, after a wait, handoff_cancelled (body.handoff holds its status)"
        ),
        502: OpenApiResponse(description="after a wait, handoff_failed (body.handoff holds its status)"),
    },
)
@api_view(["POST"])
def start_by_path(request: Request, handoff_type: str) -> Response:
    """Start any configured handoff type; the seed's paths are /handoff/prime-to-study and
    /handoff/study-to-prime."""
    kind = config.current().handoffs.type_named(handoff_type)
    if kind is None:
        known = sorted(config.current().handoffs.types)
        raise NotFound(
            f"No handoff type {handoff_type!r} is configured.", code="unknown_handoff_type", known=known
        )
    return start_from_request(request, kind.name)


def requested_wait(request: HttpRequest) -> float:
    """Seconds the caller wants a seed start to wait: ?wait=, else a Prefer header's wait=N,
    else handoffs.default_wait_seconds of the configuration (0: answer 202 at once)."""
    raw = request.GET.get("wait", preferred_wait(request.headers.get("Prefer", "")))
    if raw is None:
        return config.current().handoffs.default_wait_seconds
    wait = WaitSerializer(data={"wait": raw})
    if not wait.is_valid():
        raise InvalidRequest("wait must be a number of seconds from 0 to 3600.", fields=wait.errors)
    return wait.validated_data["wait"]


def preferred_wait(prefer: str) -> str | None:
    """The value of `wait=N` in a Prefer header (`Prefer: respond-async, wait=30`), or None."""
    for preference in prefer.split(","):
        name, _, value = preference.split(";")[0].partition("=")
        if name.strip().lower() == "wait":
            return value.strip().strip('"')
    return None


def waiting(start_view):
    """A seed start that may wait for the handoff's end without holding a thread: `start_view`
    (authentication, body, refusals) starts it in a thread, then the wait polls the row."""

    @csrf_exempt  # the DRF view inside checks CSRF for session logins itself
    async def view(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        try:
            wait_seconds = requested_wait(request)
        except DomainError as refusal:  # bad input: refused before anything starts
            return JsonResponse(refusal.body(), status=refusal.status_code)
        response = await sync_to_async(start_view)(request, *args, **kwargs)
        if response.status_code != status.HTTP_202_ACCEPTED or wait_seconds <= 0:
            return response
        ended = await services.wait_for_end(response.data["handoff_id"], timeout_seconds=wait_seconds)
        return waited(ended, wait_seconds)

    # The OpenAPI schema and the endpoint index (GET /) read the DRF view.
    view.cls, view.initkwargs = start_view.cls, start_view.initkwargs  # type: ignore[attr-defined]
    return view


def waited(handoff: dict[str, Any], wait_seconds: float) -> JsonResponse:
    """200 completed, 502 failed, 409 cancelled, 202 still running when the wait ran out."""
    status_url = f"/handoff/{handoff['handoff_id']}/status"
    phase = handoff["phase"]
    if phase in (Phase.FAILED, Phase.CANCELLED):
        code, http_status = ("handoff_failed", 502) if phase == Phase.FAILED else ("handoff_cancelled", 409)
        body = {
            "error": code,
            "detail": handoff["error"] or f"The handoff ended {phase}.",
            "success": False,
            "handoff_id": handoff["handoff_id"],
            "status_url": status_url,
            "handoff": handoff,
        }
        return JsonResponse(body, status=http_status, encoder=JSONEncoder)
    done = phase == Phase.COMPLETED
    message = (
        f"Handoff {handoff['handoff_type']} completed: {handoff['destination']} holds GPU {handoff['gpu']}"
        if done
        else f"Handoff {handoff['handoff_type']} still {phase} after {wait_seconds:g} s; follow {status_url}"
    )
    body = render(
        WaitedSerializer, {"success": True, "status_url": status_url, "message": message, **handoff}
    )
    response = JsonResponse(body, status=200 if done else 202, encoder=JSONEncoder)
    if not done:
        response["Location"] = status_url
    return response


@extend_schema(responses={200: StatusSerializer})
@api_view(["GET"])
def handoff_status(request: Request, handoff_id) -> Response:
    return Response(render(StatusSerializer, services.status(services.get(handoff_id))))


class HandoffViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Handoffs, newest first. POST {type, reason?, timeout_seconds?, gpu?} starts one (202)."""

    serializer_class = HandoffSerializer
    queryset = Handoff.objects.prefetch_related("phases").order_by("-created_at")

    @extend_schema(request=StartSerializer, responses={202: StartedSerializer, **REFUSALS})
    def create(self, request: Request) -> Response:
        return start_from_request(request, "", StartSerializer)

    @extend_schema(request=None, responses={202: StatusSerializer, 409: OpenApiResponse(description="ended")})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk=None) -> Response:
        handoff = services.get(pk)
        _require_party(request, handoff.type)
        handoff = services.cancel(handoff.id, actor=actor_name(request.user))
        return Response(render(StatusSerializer, services.status(handoff)), status=status.HTTP_202_ACCEPTED)
