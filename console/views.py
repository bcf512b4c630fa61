"""The coordinator's answers over every app: the endpoint index (GET /), the summary (GET /status),
readiness (/ready) and the Prometheus figures (/metrics). Each JSON answer is rendered by the
serializer that documents it (gaiaorch.serializers.render)."""

from django.conf import settings
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, inline_serializer
from prometheus_client import CONTENT_TYPE_LATEST
from rest_framework import renderers, serializers
from rest_framework.decorators import api_view, authentication_classes, permission_classes, renderer_classes
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from console import metrics, services
from gaiaorch.serializers import render

ROOT_SCHEMA = inline_serializer(
    "ServiceIndex",
    {
        "service": serializers.CharField(),
        "version": serializers.CharField(),
        "docs": serializers.CharField(),
        "schema": serializers.CharField(),
        "endpoints": inline_serializer(
            "Endpoint",
            {
                "path": serializers.CharField(),
                "methods": serializers.ListField(child=serializers.CharField()),
                "name": serializers.CharField(allow_null=True),
            },
            many=True,
        ),
    },
)


@extend_schema(responses={200: ROOT_SCHEMA})
@api_view(["GET"])
def index(request):
    """The service's name, version and every endpoint it answers."""
    body = {
        "service": settings.SERVICE_NAME,
        "version": settings.VERSION,
        "docs": reverse("api-docs"),
        "schema": reverse("schema"),
        "endpoints": services.endpoint_index(),
    }
    return Response(render(type(ROOT_SCHEMA), body))


STATUS_SCHEMA = inline_serializer(
    "Overview",
    {
        "service": serializers.CharField(),
        "version": serializers.CharField(),
        "status": serializers.ChoiceField(choices=["healthy", "degraded"]),
        "problems": serializers.ListField(child=serializers.CharField()),
        "gpu": serializers.DictField(help_text="as GET /gpu/status"),
        "containers": serializers.DictField(help_text="as GET /containers/status"),
        "active_handoff": serializers.DictField(allow_null=True, help_text="as GET /handoff/{id}/status"),
        "last_updated": serializers.DateTimeField(),
    },
)


@extend_schema(responses={200: STATUS_SCHEMA})
@api_view(["GET"])
def overview(request):
    """Everything at once: GPUs and leases, containers, the active handoff (cheap enough to poll)."""
    return Response(render(type(STATUS_SCHEMA), services.overview()))


READY_SCHEMA = inline_serializer(
    "Readiness",
    {
        "ready": serializers.BooleanField(),
        "checks": serializers.DictField(
            child=serializers.DictField(), help_text="database, worker, docker, telemetry: {ok, detail, …}"
        ),
        "warnings": serializers.ListField(
            child=serializers.CharField(),
            help_text="what an operator should know (tokenless writes accepted)",
        ),
        "checked_at": serializers.DateTimeField(),
    },
)


@extend_schema(responses={200: READY_SCHEMA, 503: READY_SCHEMA}, auth=[])
@api_view(["GET"])
@authentication_classes([])
@permission_classes([AllowAny])
def ready(request):
    """Readiness: 200 when the database, the worker, Docker and telemetry all work, else 503."""
    report = services.readiness()
    return Response(render(type(READY_SCHEMA), report), status=200 if report["ready"] else 503)


class PrometheusTextRenderer(renderers.BaseRenderer):
    media_type = "text/plain"
    format = "txt"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data


@extend_schema(responses={(200, "text/plain"): OpenApiTypes.STR})
@api_view(["GET"])
@renderer_classes([PrometheusTextRenderer])
def prometheus(request):
    """Prometheus text exposition, computed from the database at scrape time."""
    return Response(metrics.exposition(), content_type=CONTENT_TYPE_LATEST)
