"""Middleware that stays async under ASGI: static files, and request bodies refused up front."""

from __future__ import annotations

import json

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse
from django.utils.decorators import sync_and_async_middleware
from whitenoise.middleware import WhiteNoiseMiddleware

from gaiaorch.errors import DomainError, InvalidRequest, body_too_large


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    """WhiteNoise, in a middleware that stays async under ASGI.

    WhiteNoise's own middleware is sync-only. Django would then run the rest of every request's
    chain through a thread, so an async long-poll (/gpu/wait) would hold a thread while it waits
    and every request would pay the extra thread hop.
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response):
        super().__init__(get_response)
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request):
        if self.is_async:
            return self.__acall__(request)
        return super().__call__(request)

    async def __acall__(self, request):
        path = request.path_info
        if path.startswith(self.static_prefix):
            find = self.find_file if self.autorefresh else self.files.get
            static_file = await sync_to_async(find)(path)
            if static_file is not None:
                return await sync_to_async(self.serve)(static_file, request)
        return await self.get_response(request)


BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def body_refusal(request) -> DomainError | None:
    """Why a request's body is refused before any view runs (None: it is acceptable).

    Views that take no body never read it, so without this check an oversized or broken body
    would still trigger their action (a stack stop, a cancel).
    """
    if request.method not in BODY_METHODS or request.content_type == "multipart/form-data":
        return None
    try:
        body = request.body
    except RequestDataTooBig:
        return body_too_large()
    if not body.strip() or not is_json(request.content_type):
        return None
    try:
        json.loads(body)
    except ValueError as exc:
        return InvalidRequest(f"The body is not valid JSON: {exc}", code="malformed_request")
    return None


def is_json(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")


@sync_and_async_middleware
def RequestBodyMiddleware(get_response):
    """Refuse oversized and malformed JSON bodies (400) on every endpoint, the async ones included."""

    def refusal_response(refusal: DomainError) -> JsonResponse:
        return JsonResponse(refusal.body(), status=refusal.status_code)

    if iscoroutinefunction(get_response):

        async def async_middleware(request):
            refusal = body_refusal(request)
            return refusal_response(refusal) if refusal else await get_response(request)

        return async_middleware

    def middleware(request):
        refusal = body_refusal(request)
        return refusal_response(refusal) if refusal else get_response(request)

    return middleware
