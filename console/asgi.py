"""ASGI entry point: HTTP through Django, WebSockets through Channels."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gaiaorch.settings")
django_http = get_asgi_application()  # must run before anything imports models

from gaiaorch import config  # noqa: E402

config.current()  # daphne runs no system checks: a broken configuration must not serve

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.sessions import CookieMiddleware  # noqa: E402

from gaiaorch.serving import pooled  # noqa: E402
from leases.api.wait import one_thread_for_waits  # noqa: E402
from notifications.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        # Synchronous views on the serving pool, in one thread hop, on connections it keeps; an
        # open /gpu/wait (async) holds no thread of its own.
        "http": pooled(one_thread_for_waits(django_http)),
        # Cookies only: the consumer checks the session (or token) itself, at the handshake and
        # again every few seconds, and answers a database outage instead of failing the handshake.
        "websocket": CookieMiddleware(URLRouter(websocket_urlpatterns)),  # type: ignore[arg-type]
    }
)
