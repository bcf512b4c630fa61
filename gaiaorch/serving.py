"""Serving the synchronous views on a fixed pool of threads that keep their database connections.

Django's ASGI handler runs every synchronous step of a request (each sync middleware, the view,
the response's close, the request signals) through asgiref, in a thread made for that request:
about a dozen hops between the event loop and that thread, and a new database connection per
request (the thread is new, so Django's persistent connections could never be reused).

`pooled(app)` serves the HTTP requests whose view is synchronous (the DRF API, the console pages,
the static files) in one hop instead: the body is read on the event loop, then Django's own
synchronous handler (the synchronous middleware chain, the view, the response's close) runs on
one of THREADS threads, and the answer is sent from the event loop. Those threads keep their
connections between requests (a broken one is still closed, by Django's own checks at each
request's end). Requests whose view is async (`/gpu/wait`, a handoff start that waits) and
everything that is not HTTP go to `app`, so an open wait still holds no thread.

Code in a view that calls `async_to_sync` (the event announcement after a commit) runs that
coroutine on the server's event loop, as it does under Django's own handler.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

from asgiref.sync import SyncToAsync, iscoroutinefunction
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.base import BaseHandler
from django.db import connections
from django.urls import Resolver404, get_resolver, set_script_prefix

from gaiaorch import connections as gaiaorch_connections

THREADS = 4  # requests served at once; more only adds write-lock contention on two cores


# A serving thread answers request after request: the end of one must not close the connection
# the next uses (Django still closes it when it breaks or its settings change).
POOL = ThreadPoolExecutor(
    max_workers=THREADS, thread_name_prefix="serving", initializer=gaiaorch_connections.keep_in_this_thread
)


def close_connections() -> None:
    """Close every serving thread's connections (tests that drop their database; shutdown)."""
    # why: each thread must close its own connections; the barrier makes each take one task.
    barrier = threading.Barrier(THREADS)

    def close() -> None:
        barrier.wait(timeout=30)
        connections.close_all()

    for future in [POOL.submit(close) for _ in range(THREADS)]:
        future.result(timeout=60)


@lru_cache(maxsize=512)
def _view_is_async(path: str) -> bool:
    try:
        view = get_resolver().resolve(path).func
    except Resolver404:
        return False
    return iscoroutinefunction(view)


class PooledHandler(ASGIHandler):
    """Django's ASGI handler with the synchronous middleware chain, run on the serving pool."""

    def __init__(self) -> None:
        BaseHandler.__init__(self)
        self.load_middleware(is_async=False)

    async def handle(self, scope, receive, send) -> None:
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        try:
            response = await loop.run_in_executor(POOL, context.run, self._respond, loop, scope, body_file)
            try:
                await self.send_response(response, send)
            finally:
                if response.streaming:
                    await loop.run_in_executor(POOL, context.run, response.close)
        finally:
            body_file.close()

    def _respond(self, loop, scope, body_file):
        """On a serving thread: what Django's synchronous handler answers, closed unless it streams."""
        # asgiref's own threads record the server's loop, so that async_to_sync in a view runs
        # its coroutine there; this thread must too.
        SyncToAsync.threadlocal.main_event_loop = loop
        SyncToAsync.threadlocal.main_event_loop_pid = os.getpid()
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, response = self.create_request(scope, body_file)
        if request is not None:
            response = self.get_response(request)
            response._handler_class = self.__class__  # type: ignore[attr-defined]  # as Django's handlers do
        assert response is not None  # create_request answers an error response whenever no request
        if not response.streaming:
            response.close()  # sends request_finished: Django's end-of-request connection checks
        return response


def pooled(app):
    """ASGI middleware (console.asgi): HTTP requests to synchronous views on the serving pool."""
    handler = PooledHandler()

    async def serve(scope, receive, send):
        if scope["type"] != "http" or _view_is_async(scope["path"]):
            return await app(scope, receive, send)
        return await handler.handle(scope, receive, send)

    return serve
