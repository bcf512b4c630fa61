"""The base's own answers: liveness (/health) and unknown paths or failures in the error shape."""

from django.conf import settings
from django.http import JsonResponse
from django.utils import timezone
from django.views import defaults
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.decorators import api_view, authentication_classes, permission_classes
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from gaiaorch.serializers import render

HEALTH_SCHEMA = inline_serializer(
    "Health",
    {
        "status": serializers.CharField(),
        "service": serializers.CharField(),
        "version": serializers.CharField(),
        "timestamp": serializers.DateTimeField(),
    },
)


@extend_schema(responses={200: HEALTH_SCHEMA}, auth=[])
@api_view(["GET"])
@authentication_classes([])
@permission_classes([AllowAny])
def health(request):
    """Liveness: the process answers. Readiness (database, worker, Docker, NVML) is separate."""
    body = {
        "status": "healthy",
        "service": settings.SERVICE_NAME,
        "version": settings.VERSION,
        "timestamp": timezone.now().isoformat(),
    }
    return Response(render(type(HEALTH_SCHEMA), body))


def not_found(request, exception=None):
    """Unknown paths answer in the API's error shape; the admin keeps its own page."""
    if request.path.startswith("/admin/"):
        return defaults.page_not_found(request, exception)
    return JsonResponse(
        {"error": "not_found", "detail": f"No endpoint answers {request.path}; GET / lists them."}, status=404
    )


def server_error(request):
    """An unexpected failure, in the API's error shape (details go to the log, not the caller)."""
    if request.path.startswith("/admin/"):
        return defaults.server_error(request)
    return JsonResponse({"error": "server_error", "detail": "The server failed; see its log."}, status=500)
