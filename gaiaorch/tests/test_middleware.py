import asyncio
import json

import pytest
from django.conf import settings
from django.http import JsonResponse
from django.test import RequestFactory
from django.utils.module_loading import import_string

from gaiaorch.middleware import DeferredAnswer, DeferredAnswerMiddleware


def test_it_keeps_every_middleware_async_capable():
    """One sync-only middleware would push every request (and each /gpu/wait) through a thread."""
    sync_only = [
        path for path in settings.MIDDLEWARE if not getattr(import_string(path), "async_capable", False)
    ]
    assert sync_only == []


def test_it_serves_the_admin_stylesheet_itself(client, db):
    response = client.get("/static/admin/css/base.css")
    assert response.status_code == 200
    assert b"".join(response.streaming_content).startswith(b"/*")


async def test_it_completes_a_deferred_answer_with_the_status_and_content_its_wait_ends_with():
    async def answering():
        await asyncio.sleep(0.05)
        return JsonResponse({"granted": True}, status=200)

    async def view_and_inner_middleware(request):
        response = DeferredAnswer(request, answering())
        response["Content-Length"] = "0"  # as CommonMiddleware measures the placeholder
        response["X-Frame-Options"] = "DENY"  # a response step of the middleware, run before the wait
        return response

    response = await DeferredAnswerMiddleware(view_and_inner_middleware)(RequestFactory().post("/"))
    assert response.status_code == 200 and json.loads(response.content) == {"granted": True}
    assert response["Content-Length"] == str(len(response.content))
    assert response["X-Frame-Options"] == "DENY" and response["Content-Type"] == "application/json"


async def test_it_abandons_a_deferred_answer_whose_caller_hangs_up_before_it_comes_back():
    abandoned = asyncio.Event()
    reached = asyncio.Event()

    async def answering():
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            abandoned.set()  # where the wait undoes what it must
            raise
        return JsonResponse({})

    async def view_and_inner_middleware(request):
        DeferredAnswer(request, answering())
        reached.set()
        await asyncio.sleep(30)  # a response step of the middleware, still under way

    serving = asyncio.create_task(
        DeferredAnswerMiddleware(view_and_inner_middleware)(RequestFactory().post("/"))
    )
    await reached.wait()
    serving.cancel()  # what Django's ASGI handler does when the client hangs up
    with pytest.raises(asyncio.CancelledError):
        await serving
    assert abandoned.is_set()


async def test_it_abandons_a_deferred_answer_that_another_answer_replaced_on_its_way_out():
    abandoned = asyncio.Event()

    async def answering():
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            abandoned.set()
            raise
        return JsonResponse({})

    async def view_and_failing_middleware(request):
        DeferredAnswer(request, answering())
        return JsonResponse({"error": "server_error"}, status=500)  # a response step that failed

    response = await DeferredAnswerMiddleware(view_and_failing_middleware)(RequestFactory().post("/"))
    assert response.status_code == 500 and abandoned.is_set()
