"""Thin views: parse, check who may act, call one service, serialize."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action, api_view
from rest_framework.request import Request
from rest_framework.response import Response

from gaiaorch import config
from gaiaorch.auth import actor_name
from gaiaorch.errors import Forbidden, NotFound
from handoffs import services
from handoffs.api.serializers import (
    HandoffSerializer,
    StartedSerializer,
    StartSeedSerializer,
    StartSerializer,
    StatusSerializer,
)
from handoffs.models import Handoff


def _require_party(request: Request, handoff_type: str) -> None:
    """Operators start anything; a service account only handoffs it gives or receives."""
    user = request.user
    if user.is_staff:
        return
    kind = config.current().handoffs.type_named(handoff_type)
    if kind and user.get_username() not in (kind.source, kind.destination):
        raise Forbidden(
            f"{user.get_username()} is neither the source nor the destination of {handoff_type}.",
            handoff_type=handoff_type,
        )


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
    return Response(body, status=status.HTTP_202_ACCEPTED)


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


@extend_schema(
    request=StartSeedSerializer,
    parameters=[
        OpenApiParameter(
            "handoff_type",
            OpenApiTypes.STR,
            OpenApiParameter.PATH,
            description="A configured handoff type, e.g. prime-to-study or study-to-prime (the seed's)",
        )
    ],
    responses={202: StartedSerializer, 404: OpenApiResponse(description="unknown_handoff_type"), **REFUSALS},
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


@extend_schema(responses={200: StatusSerializer})
@api_view(["GET"])
def handoff_status(request: Request, handoff_id) -> Response:
    return Response(services.status(services.get(handoff_id)))


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
        return Response(services.status(handoff), status=status.HTTP_202_ACCEPTED)
