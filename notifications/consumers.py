"""WS /ws/notifications: every event in id order, with replay and type filters.

Each connection has a cursor (the last event id it has accounted for), a pump that moves events
past the cursor into a bounded queue, and a sender that drains the queue into the socket. Replay
and live delivery are the same loop reading by id, so there is no seam to gap or duplicate at.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
from dataclasses import dataclass
from functools import partial
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.db import DatabaseError
from django.middleware.csrf import CsrfViewMiddleware

from gaiaorch import config as gaiaorch_config
from gaiaorch.auth import client_address, operator_for_session, trusted_network_of, user_for_key
from gaiaorch.errors import DomainError, InvalidRequest, Unavailable
from notifications import feed
from notifications.hub import FETCH_BATCH, Hub, hub_for_running_loop

logger = logging.getLogger(__name__)

CLOSE_UNAUTHORIZED = 4401  # no valid credential, at the handshake or at any re-check after it
CLOSE_BAD_REQUEST = 4400
CLOSE_TOO_SLOW = 4008
CLOSE_SERVER_ERROR = 1011  # the database failed: reconnect later with ?after=
MAX_TYPE_PATTERNS = 50
# An open stream re-checks its credential this often (one indexed query), so a rotated or
# revoked token, a deactivated account or a logged-out session stops receiving events.
RECHECK_SECONDS = 5.0


class SlowClient(Exception):
    pass


class NotificationConsumer(AsyncWebsocketConsumer):
    tasks: list[asyncio.Task]
    hub: Hub | None

    async def connect(self) -> None:
        self.tasks, self.hub, self.gauge = [], None, TransportGauge()
        self.params = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        self.credential = Credential.of(self.scope, self.params)
        try:
            self.identity = await self.authenticate()
            if self.identity is None:
                await self.close(code=CLOSE_UNAUTHORIZED)  # before accept: daphne answers 403
                return
            after, self.wants = stream_options(self.params)
            await self.start_stream(after)
        except InvalidRequest as error:
            await self.refuse(error, CLOSE_BAD_REQUEST)
        except DatabaseError as exc:
            await self.refuse(
                Unavailable(f"The database refused the request: {exc}", code="database_unavailable")
            )

    async def refuse(self, error: DomainError, code: int = CLOSE_SERVER_ERROR) -> None:
        """Accept only to say why, then close: a browser sees close codes, never HTTP statuses."""
        await self.accept()
        await self.send(text_data=json.dumps(error.body()))
        await self.close(code=code)

    async def authenticate(self) -> Identity:
        """Who this connection reads as, or None. A session counts only from a page of this site
        (a token cannot ride along on another site's page; a cookie can)."""
        if self.credential.session_key and not same_origin(self.scope):
            return None
        return await database_sync_to_async(self.credential.identity)()

    async def start_stream(self, after: int | None) -> None:
        config = gaiaorch_config.current().notifications
        self.queue: asyncio.Queue[str] = asyncio.Queue(maxsize=config.client_queue_size)
        self.slow_after = config.slow_client_timeout_seconds
        self.hub = hub_for_running_loop()
        await self.hub.join(self)
        cursor = self.hub.last_id if after is None else await replay_cursor(after, config.replay_limit)
        self.gauge = TransportGauge.attach(self.base_send)
        await self.accept()
        self.tasks = [
            asyncio.create_task(self.pump(cursor)),
            asyncio.create_task(self.drain()),
            asyncio.create_task(self.watch_credential()),
        ]

    async def disconnect(self, code: int) -> None:
        for task in self.tasks:
            task.cancel()
        self.gauge.detach()
        if self.hub is not None:
            await self.hub.leave(self)

    async def receive(self, text_data=None, bytes_data=None) -> None:
        """Clients only listen; anything they send is ignored."""

    async def pump(self, cursor: int) -> None:
        """Move every wanted event after the cursor into the queue, in id order, forever."""
        try:
            while True:
                advanced, upto = self.hub.advanced, self.hub.last_id  # type: ignore[union-attr]  # streaming
                if cursor >= upto:
                    await advanced.wait()
                    continue
                items = self.hub.items_after(cursor)  # type: ignore[union-attr]
                if items is None:  # behind the hub's ring: catch up from the database
                    items = await read_items(cursor, upto)
                    upto = upto if len(items) < FETCH_BATCH else items[-1].id
                for item in items:
                    if self.wants(item.type):
                        await self.enqueue(item.text)
                cursor = upto
        except SlowClient:
            logger.warning("dropping a client that stopped reading (%s)", self.scope.get("client"))
            await self.close(code=CLOSE_TOO_SLOW)
        except Exception:  # e.g. the database went away: the client reconnects with ?after=
            logger.exception("notification stream failed; closing the connection")
            await self.close(code=CLOSE_SERVER_ERROR)

    async def enqueue(self, text: str) -> None:
        if not self.queue.full():
            self.queue.put_nowait(text)
            return
        try:
            await asyncio.wait_for(self.queue.put(text), self.slow_after)
        except TimeoutError:
            raise SlowClient from None

    async def drain(self) -> None:
        while True:
            text = await self.queue.get()
            await self.gauge.writable()
            await self.send(text_data=text)

    async def watch_credential(self) -> None:
        """Close the stream once its credential no longer names the account it connected as."""
        check = database_sync_to_async(self.credential.identity)
        while True:
            await asyncio.sleep(RECHECK_SECONDS)
            try:
                still_valid = await check() == self.identity
            except DatabaseError:
                logger.warning("cannot re-check a notification stream's credential; closing it")
                await self.close(code=CLOSE_SERVER_ERROR)
                return
            if not still_valid:
                await self.close(code=CLOSE_UNAUTHORIZED)
                return


# An account's id, or the trusted network of a tokenless reader; None: no valid credential.
Identity = int | str | None


@dataclass(frozen=True)
class Credential:
    """What a connection authenticates with: a service token, else an admin session's key, else
    (only where orchestrator.trusted_networks is set) the address of a tokenless reader."""

    token: str = ""
    session_key: str = ""
    client: str = ""

    @classmethod
    def of(cls, scope, params: dict[str, list[str]]) -> Credential:
        token = params.get("token", [""])[-1] or header_token(scope)
        if token or "token" in params or has_header(scope, b"authorization"):
            return cls(token=token)  # a wrong or empty token is refused, never read as tokenless
        session_key = scope.get("cookies", {}).get(settings.SESSION_COOKIE_NAME, "")
        if session_key or has_header(scope, b"origin"):  # a browser page never reads without a credential
            return cls(session_key=session_key)
        return cls(client=tokenless_client(scope) or "")

    def identity(self) -> Identity:
        """Who the credential names while it is valid (database; call from a thread)."""
        if self.client:
            trusted = trusted_network_of(self.client)
            return f"trusted network {trusted.network}" if trusted else None
        user = user_for_key(self.token) if self.token else operator_for_session(self.session_key)
        return user.pk if user else None


def tokenless_client(scope) -> str | None:
    """The client address of the ASGI scope (through orchestrator.trusted_proxies)."""
    peer = (scope.get("client") or [None])[0]
    return client_address(peer, header_value(scope, b"x-forwarded-for"))


def stream_options(params: dict[str, list[str]]):
    """`?after=<id>` (replay from there) and `?types=a.*,b` (repeatable)."""
    after = params.get("after", [None])[-1]
    if after is not None and (not (after.isascii() and after.isdigit()) or len(after) > 18):
        raise InvalidRequest("after must be an event id (a non-negative integer).", field="after")
    patterns = [p.strip() for raw in params.get("types", []) for p in raw.split(",") if p.strip()]
    if len(patterns) > MAX_TYPE_PATTERNS or any(len(p) > 64 for p in patterns):
        raise InvalidRequest(
            f"types takes at most {MAX_TYPE_PATTERNS} patterns, 64 characters each.", field="types"
        )
    return (None if after is None else int(after)), feed.type_filter(patterns)


def header_token(scope) -> str:
    scheme, _, key = header_value(scope, b"authorization").partition(" ")
    return key.strip() if scheme.lower() == "token" else ""


def header_value(scope, name: bytes) -> str:
    values = [value.decode("latin-1") for key, value in scope.get("headers", []) if key == name]
    return ", ".join(values)


def has_header(scope, name: bytes) -> bool:
    return any(key == name for key, _ in scope.get("headers", []))


def same_origin(scope) -> bool:
    """Session logins come from browsers: refuse pages of other sites riding the admin's cookie.

    The rule of Django's CSRF check, applied to the handshake as to a POST: the Origin is this
    site (the scheme, host and port the browser called; ws is http, wss is https) or one of
    CSRF_TRUSTED_ORIGINS. A client that sends no Origin is not a browser page.
    """
    headers = dict(scope.get("headers", []))
    if b"origin" not in headers:
        return True
    scheme = "https" if scope.get("scheme") == "wss" else "http"
    request = ASGIRequest({**scope, "type": "http", "method": "GET", "scheme": scheme}, io.BytesIO())
    # why the private method: it is the exact rule (host validation, trusted origins, wildcards).
    return CsrfViewMiddleware(lambda request: None)._origin_verified(request)  # type: ignore[arg-type, attr-defined]


@database_sync_to_async
def replay_cursor(after: int, limit: int) -> int:
    return feed.replay_cursor(after, limit)


@database_sync_to_async
def read_items(cursor: int, upto: int) -> list[feed.FeedItem]:
    return feed.items_after(cursor, upto, FETCH_BATCH)


class TransportGauge:
    """Tells the sender when the client's socket can take more.

    Under daphne it is registered as a Twisted streaming producer on the connection's socket, so
    Twisted pauses it when the client stops reading and the send buffer fills; the queue then fills and the
    client is dropped. Under other servers it is always writable.
    """

    def __init__(self, transport=None) -> None:
        self.transport = transport
        self._writable = asyncio.Event()
        self._writable.set()

    @classmethod
    def attach(cls, send) -> TransportGauge:
        transport = getattr(daphne_protocol(send), "transport", None)
        gauge = cls(transport)
        if transport is not None:
            try:
                # Daphne leaves the HTTP channel registered after the upgrade; the socket is ours now.
                if getattr(transport, "producer", None) is not None:
                    transport.unregisterProducer()
                transport.registerProducer(gauge, True)
            except Exception:
                logger.warning("cannot watch this connection's send buffer", exc_info=True)
                gauge.transport = None
        return gauge

    def detach(self) -> None:
        if self.transport is not None:
            try:
                self.transport.unregisterProducer()
            except Exception:
                logger.debug("connection gone before its producer was removed", exc_info=True)

    async def writable(self) -> None:
        await self._writable.wait()

    # Twisted's IPushProducer, called on the event loop's thread (daphne runs Twisted on asyncio).
    def pauseProducing(self) -> None:
        self._writable.clear()

    def resumeProducing(self) -> None:
        self._writable.set()

    def stopProducing(self) -> None:
        self._writable.set()


def daphne_protocol(send):
    """Daphne's send is a functools.partial bound to the connection; Channels' session middleware
    wraps it (keeping it as `real_send`). Returns the connection, or None under other servers."""
    for _ in range(8):
        if isinstance(send, partial):
            return next((arg for arg in send.args if hasattr(arg, "registerProducer")), None)
        send = getattr(getattr(send, "__self__", None), "real_send", None)
        if send is None:
            return None
    return None
