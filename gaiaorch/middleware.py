"""Static files for daphne without making every request synchronous."""

from __future__ import annotations

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from whitenoise.middleware import WhiteNoiseMiddleware


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
