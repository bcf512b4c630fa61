"""Domain errors and the one JSON error shape: {"error": code, "detail": sentence, ...context}."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError
from rest_framework import exceptions, status
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
from rest_framework.response import Response


class DomainError(Exception):
    """A refusal that callers can act on; the HTTP status says which kind."""

    status_code: int = status.HTTP_400_BAD_REQUEST
    code = "invalid_request"

    def __init__(self, detail: str, code: str | None = None, **context: Any):
        super().__init__(detail)
        self.detail = detail
        self.code = code or self.code
        self.context = context

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "detail": self.detail, **self.context}


class InvalidRequest(DomainError):
    pass


class NotFound(DomainError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "not_found"


class Forbidden(DomainError):
    status_code = status.HTTP_403_FORBIDDEN
    code = "forbidden"


class Conflict(DomainError):
    status_code = status.HTTP_409_CONFLICT
    code = "conflict"


class Unavailable(DomainError):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    code = "unavailable"


DRF_CODES = {
    exceptions.ParseError: "malformed_request",
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "forbidden",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "throttled",
    exceptions.NotAcceptable: "not_acceptable",
}


def body_too_large() -> InvalidRequest:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return InvalidRequest(
        f"The request body is larger than {limit} bytes.",
        code="body_too_large",
        fields={"body": [f"must be at most {limit} bytes"]},
    )


def error_response(code: str, detail: str, http_status: int, **context: Any) -> Response:
    return Response({"error": code, "detail": detail, **context}, status=http_status)


def _drf_error(exc: exceptions.APIException) -> Response:
    if isinstance(exc, exceptions.ValidationError):
        fields = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        return error_response("invalid_request", "The request has invalid fields.", 400, fields=fields)
    code = next((c for cls, c in DRF_CODES.items() if isinstance(exc, cls)), "error")
    response = error_response(code, str(exc.detail), exc.status_code)
    auth_header = getattr(exc, "auth_header", None)
    if auth_header:
        response["WWW-Authenticate"] = auth_header
    return response


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF hook: every failure leaves as the same JSON shape with the right status."""
    response = _error_for(exc)
    if response is not None:
        _render_as_json(context.get("request"))
    return response


def _render_as_json(request) -> None:
    """An error is JSON even where the answer would have been Prometheus text, OpenAPI YAML or
    the docs page: their renderers cannot render an error body (Prometheus text showed only the
    keys, `errordetail`). The browsable API keeps its HTML page for people."""
    renderer = getattr(request, "accepted_renderer", None)
    if request is not None and not isinstance(renderer, JSONRenderer | BrowsableAPIRenderer):
        request.accepted_renderer, request.accepted_media_type = JSONRenderer(), JSONRenderer.media_type


def _error_for(exc: Exception) -> Response | None:
    if isinstance(exc, RequestDataTooBig):
        exc = body_too_large()
    if isinstance(exc, DomainError):
        return Response(exc.body(), status=exc.status_code)
    if isinstance(exc, exceptions.APIException):
        return _drf_error(exc)
    if isinstance(exc, DatabaseError):
        return error_response("database_unavailable", f"The database refused the request: {exc}", 503)
    return None
