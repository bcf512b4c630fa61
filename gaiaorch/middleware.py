"""Middleware that stays async under ASGI: answers decided after a wait, static files, bad
requests refused up front, and the audit scope of each request."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from contextlib import suppress
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.decorators import sync_and_async_middleware
from whitenoise.middleware import WhiteNoiseMiddleware

from gaiaorch.auth import audit_scope
from gaiaorch.errors import DomainError, InvalidRequest, NotFound, body_too_large


class DeferredAnswer(HttpResponse):
    """The answer of an async view that must wait first (a long-poll), returned before the wait.

    Under ASGI each synchronous response step of the middleware (most of Django's own) is a
    thread hop; run after the wait, those hops lie between the event that ends it and the answer.
    Returned at once, this response takes those steps while the wait goes on, and
    `DeferredAnswerMiddleware`, the outermost, gives it the status and content of the answer
    `answering` ends with. A caller that hangs up at any point cancels `answering` (which undoes
    what it must, as it would in the view).
    """

    def __init__(self, request: HttpRequest, answering: Coroutine[Any, Any, HttpResponse]):
        super().__init__(status=202, content_type="application/json")
        self.answering = asyncio.ensure_future(answering)  # the wait starts now
        # for the middleware, should the caller hang up before this response reaches it
        request._deferred_answer = self  # type: ignore[attr-defined]  # a request of this view only

    async def complete(self) -> None:
        answer = await self.answering
        self.status_code = answer.status_code
        self["Content-Type"] = answer["Content-Type"]
        self.content = answer.content
        if self.has_header("Content-Length"):  # CommonMiddleware measured the placeholder
            self["Content-Length"] = str(len(self.content))

    async def abandon(self) -> None:
        await asyncio.sleep(0)  # its first step first: cancelled before it, it could undo nothing
        if not self.answering.cancelling():  # a hang-up during complete() has cancelled it already
            self.answering.cancel()
        with suppress(asyncio.CancelledError):
            await self.answering


def may_defer(request: HttpRequest) -> bool:
    """Whether a DeferredAnswer of this request will be completed: only under an async handler
    chain (ASGI), where DeferredAnswerMiddleware runs as a coroutine; a synchronous one (WSGI, the
    test client) must be given the final answer."""
    return getattr(request, "_answers_deferred", False)


@sync_and_async_middleware
def DeferredAnswerMiddleware(get_response):
    """The outermost middleware: completes a `DeferredAnswer` once its wait ends. A hang-up (the
    request's task cancelled) abandons it, even before the view's answer came back here, and so
    does an answer that replaced it on its way out (an error in a response step)."""

    if iscoroutinefunction(get_response):

        async def async_middleware(request):
            request._answers_deferred = True  # see may_defer
            try:
                response = await get_response(request)
                deferred = getattr(request, "_deferred_answer", None)
                if deferred is response:
                    await deferred.complete()
                elif deferred is not None:
                    await deferred.abandon()
                return response
            except asyncio.CancelledError:
                deferred = getattr(request, "_deferred_answer", None)
                if deferred is not None:
                    await deferred.abandon()
                raise

        return async_middleware

    return get_response  # a synchronous view answers at once


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
NUL = "\x00"


def request_refusal(request) -> DomainError | None:
    """Why a request is refused before any view runs (None: it is acceptable)."""
    return nul_byte_refusal(request) or body_refusal(request)


def nul_byte_refusal(request) -> DomainError | None:
    """A NUL byte in the path (404) or in a query key or value (400).

    No id, name or filter of this API holds one, and PostgreSQL refuses it in any text parameter,
    which would turn a lookup into a database error.
    """
    if NUL in request.path:
        return NotFound("No endpoint answers a path with a NUL byte; GET / lists them.")
    if any(NUL in key or any(NUL in value for value in values) for key, values in request.GET.lists()):
        return InvalidRequest("The query string holds a NUL byte.", field="query")
    return None


def body_refusal(request) -> DomainError | None:
    """Why a request's body is refused (None: it is acceptable).

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
        parse_json(body)
    except InvalidRequest as refusal:
        return refusal
    return None


def parse_json(body: bytes | str) -> Any:
    """The body's JSON document, or InvalidRequest (malformed_request) saying why not."""
    try:
        return json.loads(body)
    except RecursionError:
        # why: a body of a thousand `[` exhausts the parser's recursion limit (not a ValueError).
        raise InvalidRequest("The body is nested too deeply.", code="malformed_request") from None
    except ValueError as exc:
        raise InvalidRequest(f"The body is not valid JSON: {exc}", code="malformed_request") from None


def is_json(content_type: str) -> bool:
    return content_type == "application/json" or content_type.endswith("+json")


@sync_and_async_middleware
def RequestRefusalMiddleware(get_response):
    """Refuse NUL bytes in paths and queries, and oversized or malformed JSON bodies, on every
    endpoint, the async ones included."""

    def refusal_response(refusal: DomainError) -> JsonResponse:
        return JsonResponse(refusal.body(), status=refusal.status_code)

    if iscoroutinefunction(get_response):

        async def async_middleware(request):
            refusal = request_refusal(request)
            return refusal_response(refusal) if refusal else await get_response(request)

        return async_middleware

    def middleware(request):
        refusal = request_refusal(request)
        return refusal_response(refusal) if refusal else get_response(request)

    return middleware


@sync_and_async_middleware
def AuditMiddleware(get_response):
    """Each request gets its own audit scope: events written while serving a tokenless caller
    from a trusted network are marked `authenticated: false` with its address (gaiaorch.auth)."""

    if iscoroutinefunction(get_response):

        async def async_middleware(request):
            with audit_scope():
                return await get_response(request)

        return async_middleware

    def middleware(request):
        with audit_scope():
            return get_response(request)

    return middleware
