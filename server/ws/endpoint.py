"""``GET /v1/ws``: the handshake, then a reader and a writer around the hub.

Credentials, in the contract's order: ``Authorization: Bearer``; the ``jwt`` cookie,
only from an allowed Origin (a cookie from a refused origin is ignored, and the
handshake is refused unless a ticket follows); a single-use ``?ticket=``. A refused
handshake is an HTTP 401/403 with the REST error envelope, never an upgrade.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import uuid
import weakref
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from starlette.responses import Response
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from errors import Forbidden, ParleyError, RateLimited, Unauthorized
from realtime.close_codes import CloseCode
from realtime.connection import Connection
from realtime.frames import encode, welcome
from realtime.hub import Hub
from server.config import Settings
from server.container import Container, container_of
from server.logging import conn_id_var, request_id_var
from server.rest.http import error_response
from server.rest.middleware import MAX_REQUEST_ID
from server.security.origins import origin_allowed
from server.services.accounts import Principal
from server.serving import CLOSE_NOW_EXTENSION, SEND_TEXTS_EXTENSION, WAIT_WRITABLE_EXTENSION
from server.ws.handler import ConnectionHandler

log = logging.getLogger("parley.ws")

# How long the writer may take to flush and send a requested close.
CLOSE_FLUSH_GRACE_S = 2.0
EXPIRY_RECHECK_S = 30.0
EXPIRY_TIMER_SLACK_S = 0.001
HANDSHAKE_REFUSED = "credentials missing, invalid or expired"
# The Retry-After of a handshake refused for a connection cap.
CAP_RETRY_AFTER_S = 5.0
# At most this much of the outbox goes into one socket write (at least one frame): with
# writes only while the transport is below its high-water mark, the transport holds at
# most that mark plus this, and the rest of a backlog stays in the bounded outbox.
WRITE_CHUNK_BYTES = 65_536


async def authenticate_handshake(container: Container, websocket: WebSocket) -> Principal:
    header = websocket.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("the Authorization header must be 'Bearer <token>'")
        return await container.accounts.authenticate(token.strip())
    ticket = websocket.query_params.get("ticket")
    cookie = websocket.cookies.get("jwt")
    if cookie:
        settings = container.settings
        if origin_allowed(websocket, settings.allowed_origins, settings.public_url):
            return await container.accounts.authenticate(cookie)
        if not ticket:
            raise Forbidden("origin not allowed for cookie authentication")
    if ticket:
        return await container.accounts.redeem_ticket(ticket)
    raise Unauthorized("credentials required: Bearer header, jwt cookie or ticket")


async def websocket_endpoint(websocket: WebSocket) -> None:
    container = container_of(websocket)
    hub: Hub = container.hub
    # What RequestContextMiddleware does for other requests (the app's fast path skips
    # the middleware stack, see ``serve_websocket``): this task is the connection's
    # own, so the id is set for its life without a reset.
    request_id = _request_id(websocket)
    request_id_var.set(request_id)
    try:
        principal = await authenticate_handshake(container, websocket)
    except ParleyError as exc:
        container.metrics.handshake_refused.labels(exc.code).inc()
        if isinstance(exc, Unauthorized):
            # One answer for every bad credential: telling "expired" from "bad
            # signature" or "no such ticket" helps whoever is guessing. The log keeps why.
            log.info("handshake refused: %s", exc.message)
            exc = Unauthorized(HANDSHAKE_REFUSED)
        await _deny(websocket, error_response(exc), request_id)
        return
    caps = _connection_caps(container)
    address = (
        websocket.client.host
        if container.settings.trust_proxy_headers and websocket.client is not None
        else None
    )
    refusal = caps.admit(container.settings, str(principal.user_id), address)
    if refusal is not None:
        container.metrics.handshake_refused.labels(refusal.code).inc()
        await _deny(websocket, error_response(refusal), request_id)
        return
    try:
        await websocket.accept()
        _forget_handshake(websocket)
        # The reader runs in this task and the writer in its own; when the writer ends (a
        # close went out, the peer went away) or the close is abandoned, the reader is
        # cancelled. One task fewer per connection than a reader task, and no asyncio.wait
        # bookkeeping: ~2 KiB per idle connection.
        endpoint = asyncio.current_task()
        assert endpoint is not None
        life = _Lifecycle(endpoint, container)
        conn = Connection(
            conn_id=uuid.uuid4().hex,
            user_id=str(principal.user_id),
            name=principal.name,
            role=principal.role,
            expires_at=principal.expires_at,
            max_outbox=container.settings.send_queue_frames,
            max_outbox_bytes=container.settings.send_queue_bytes,
            on_overflow=life.overflowed,
            on_close=life.arm_abandon,
            family=str(principal.family_id) if principal.family_id else None,
        )
        life.close_now = websocket.scope["extensions"].get(CLOSE_NOW_EXTENSION)
        conn_id_var.set(conn.conn_id)
        handler = ConnectionHandler(container, hub, conn)
        conn.send(
            encode(
                welcome(
                    conn.conn_id,
                    conn.user_id,
                    conn.name,
                    container.settings.heartbeat_s,
                    await _budget_left(container, principal.user_id),
                )
            )
        )
        hub.register(conn)  # after the welcome: it may queue a notice (the bus is down)
        writer = asyncio.create_task(_write(websocket, conn), name=f"ws-write-{conn.conn_id}")
        writer.add_done_callback(life.stop)
        expiry = _expiry_timers().watch(conn)
        try:
            await _read(websocket, handler)
        except asyncio.CancelledError:
            if not life.stopping or endpoint.cancelling() > 1:
                raise  # cancelled from outside (shutdown): not ours to swallow
            endpoint.uncancel()
        except Exception:
            log.exception("connection reader failed")
        finally:
            life.stopping = True
            if expiry is not None:
                expiry[2] = None  # the timers drop the entry when it comes due
            life.disarm_abandon()
            try:
                await handler.stop()  # frames sent before the end are still handled
            finally:
                writer.cancel()
                await asyncio.gather(writer, return_exceptions=True)
                if not writer.cancelled() and writer.exception() is not None:
                    log.error("connection writer failed", exc_info=writer.exception())
                await hub.unregister(conn)
    finally:
        caps.release(str(principal.user_id), address)


def _request_id(websocket: WebSocket) -> str:
    incoming = websocket.headers.get("x-request-id", "")
    return incoming if 0 < len(incoming) <= MAX_REQUEST_ID else uuid.uuid4().hex


async def _deny(websocket: WebSocket, response: Response, request_id: str) -> None:
    response.headers["X-Request-ID"] = request_id
    await websocket.send_denial_response(response)


def _forget_handshake(websocket: WebSocket) -> None:
    """Drop the handshake's headers, query and their parsed copies once accepted.

    Nothing reads them after the upgrade, and the scope lives as long as the
    connection: ~1.5 KiB per idle connection (a Bearer token, cookies, user agent).
    """
    scope = websocket.scope
    scope["headers"] = []
    scope["query_string"] = b""
    for cached in ("_headers", "_cookies", "_query_params", "_url", "_base_url"):
        websocket.__dict__.pop(cached, None)


async def _read(websocket: WebSocket, handler: ConnectionHandler) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is not None:
            await handler.receive_text(text)
        else:
            handler.handle_binary()
        if handler.conn.closing is not None:
            # The writer closes the socket after flushing; stop reading new work.
            await asyncio.Event().wait()


async def _write(websocket: WebSocket, conn: Connection) -> None:
    # One socket write per queued batch where the server offers it (server/serving.py).
    extensions = websocket.scope.get("extensions", {})
    send_texts = extensions.get(SEND_TEXTS_EXTENSION)
    wait_writable = extensions.get(WAIT_WRITABLE_EXTENSION)
    try:
        while True:
            await conn.wait_ready()
            if wait_writable is not None and conn.closing is None:
                # A peer that stops reading stops us here, with its backlog still in
                # the outbox where its bound (in frames and bytes) applies.
                await wait_writable()
            batch, closing = conn.take(WRITE_CHUNK_BYTES if send_texts is not None else 0)
            if send_texts is not None and batch:
                await send_texts(batch)
            else:
                for text in batch:
                    await websocket.send({"type": "websocket.send", "text": text})
            # Not held while waiting for the next batch (an idle connection's last frame).
            del batch
            if closing is not None:
                code, reason = closing
                with contextlib.suppress(RuntimeError, WebSocketDisconnect, OSError):
                    await websocket.close(code, reason)
                return
    except (WebSocketDisconnect, OSError, RuntimeError):
        return


class _Lifecycle:
    """What ends one connection's endpoint, and its callbacks, in one slotted object.

    ``stop`` cancels the endpoint (the reader) once: when the writer ends, or when a
    requested close has not gone out in time. A peer that stops reading leaves the
    writer waiting on a send forever, so the close it was asked for never goes out;
    without the abandon timer it would stay registered. The timer is armed by the close
    request (``conn.on_close``), so an idle connection pays nothing for it, and no
    future or closure is kept per connection either.
    """

    __slots__ = ("_container", "_endpoint", "_handle", "close_now", "stopping")

    def __init__(self, endpoint: asyncio.Task[Any], container: Container) -> None:
        self._endpoint = endpoint
        self._container = container
        self._handle: asyncio.TimerHandle | None = None
        self.stopping = False
        # The server's way to send a close past a writer stuck on a peer that stopped
        # reading (server/serving.py); None when the server offers none.
        self.close_now: Callable[[int, str], None] | None = None

    def stop(self, _: object = None) -> None:
        if not self.stopping:
            self.stopping = True
            self._endpoint.cancel()

    def overflowed(self, conn: Connection) -> None:
        self._container.metrics.slow_clients_dropped.inc()
        # The writer waits for the peer to read; the ``TRY_AGAIN_LATER`` goes out now, behind what
        # the transport holds (a bounded amount), not behind the dropped backlog.
        if self.close_now is not None and conn.closing is not None:
            self.close_now(*conn.closing)

    def arm_abandon(self) -> None:
        if self._handle is None and not self.stopping:
            loop = asyncio.get_running_loop()
            self._handle = loop.call_later(CLOSE_FLUSH_GRACE_S, self._give_up)

    def disarm_abandon(self) -> None:
        if self._handle is not None:
            self._handle.cancel()

    def _give_up(self) -> None:
        if not self.stopping:
            log.info("peer did not take its close in %.0f s; dropping it", CLOSE_FLUSH_GRACE_S)
            self.stop()


class _ExpiryTimers:
    """Closes connections with ``TOKEN_EXPIRED`` (4401) when their access token expires
    and no ``refresh`` came.

    One loop timer for all the connections of an event loop, over a heap of
    ``[due, seq, conn]`` entries (~150 bytes each): a loop timer per connection costs
    ~600 bytes with uvloop, a task parked in ``wait_for`` ~3 KiB. ``refresh`` moves
    ``conn.expires_at``; an entry re-reads it when it comes due, and comes due at least
    every ``EXPIRY_RECHECK_S`` so that a refresh to a token expiring sooner is honoured
    too. A finished connection's endpoint sets its entry's ``conn`` to None; the entry
    is dropped when it comes due (within ``EXPIRY_RECHECK_S``).
    """

    # No reference to the loop: the registry below holds loops weakly.
    __slots__ = ("_at", "_handle", "_heap", "_seq")

    def __init__(self) -> None:
        self._heap: list[list[Any]] = []
        self._seq = 0
        self._handle: asyncio.TimerHandle | None = None
        self._at = math.inf

    def watch(self, conn: Connection) -> list[Any] | None:
        """Start watching; returns the entry (to clear on exit), or None if not needed."""
        entry = [0.0, self._seq, conn]
        self._seq += 1
        loop = asyncio.get_running_loop()
        if not self._due_again(entry, conn, loop.time()):
            return None
        self._arm(loop)
        return entry

    def _due_again(self, entry: list[Any], conn: Connection, now: float) -> bool:
        """Closes ``conn`` if its token has expired, else puts ``entry`` back in the heap."""
        if conn.expires_at is None or conn.closing is not None:
            return False
        remaining = (conn.expires_at - datetime.now(UTC)).total_seconds()
        if remaining <= 0:
            conn.close(CloseCode.TOKEN_EXPIRED, "access token expired")
            return False
        entry[0] = now + min(remaining, EXPIRY_RECHECK_S)
        heapq.heappush(self._heap, entry)
        return True

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        """Keep the one timer at the earliest entry."""
        heap = self._heap
        at = heap[0][0] if heap else math.inf
        if at == self._at:
            return
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._at = at
        if heap:
            self._handle = loop.call_at(at, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._at = math.inf
        loop = asyncio.get_running_loop()
        now = loop.time()
        heap = self._heap
        try:
            # A loop's timers may run up to a clock tick early; take what is due by then.
            while heap and heap[0][0] <= now + EXPIRY_TIMER_SLACK_S:
                entry = heapq.heappop(heap)
                conn = entry[2]
                if conn is None:
                    continue
                try:
                    self._due_again(entry, conn, now)
                except Exception:  # one connection's failure must not stop the others'
                    log.exception("token expiry check failed")
        finally:
            self._arm(loop)


_timers_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _ExpiryTimers] = (
    weakref.WeakKeyDictionary()
)


def _expiry_timers() -> _ExpiryTimers:
    loop = asyncio.get_running_loop()
    timers = _timers_by_loop.get(loop)
    if timers is None:
        timers = _timers_by_loop[loop] = _ExpiryTimers()
    return timers


class _ConnectionCaps:
    """WebSocket connections open on this node, per user and (behind a trusted proxy,
    where sockets all come from the proxy) per forwarded client address. Without a
    proxy, sockets per address are capped below the app (server/serving.py)."""

    __slots__ = ("by_address", "by_user")

    def __init__(self) -> None:
        self.by_user: dict[str, int] = {}
        self.by_address: dict[str, int] = {}

    def admit(self, settings: Settings, user_id: str, address: str | None) -> RateLimited | None:
        user_cap = settings.max_connections_per_user
        if user_cap and self.by_user.get(user_id, 0) >= user_cap:
            return RateLimited(
                f"at most {user_cap} connections per user; close one first",
                retry_after=CAP_RETRY_AFTER_S,
            )
        address_cap = settings.max_connections_per_ip
        if address is not None and address_cap and self.by_address.get(address, 0) >= address_cap:
            return RateLimited(
                "too many connections from this address", retry_after=CAP_RETRY_AFTER_S
            )
        self.by_user[user_id] = self.by_user.get(user_id, 0) + 1
        if address is not None:
            self.by_address[address] = self.by_address.get(address, 0) + 1
        return None

    def release(self, user_id: str, address: str | None) -> None:
        for counts, key in ((self.by_user, user_id), (self.by_address, address)):
            if key is None:
                continue
            left = counts.get(key, 0) - 1
            if left > 0:
                counts[key] = left
            else:
                counts.pop(key, None)


def _connection_caps(container: Container) -> _ConnectionCaps:
    return container.ws_connection_caps


class _WebSocketApp:
    """``websocket_endpoint`` as a plain ASGI app.

    Given a function, Starlette wraps it in two coroutines, two closures, a second
    ``WebSocket`` and a second exception-handling layer, all alive for the connection's
    life (~2 KiB). The endpoint handles its own errors; one that escapes ends the
    connection through uvicorn (logged, and a 500 or a 1011). Not a coroutine function
    either: the endpoint's coroutine is awaited by the caller directly, one frame fewer.
    """

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Coroutine[Any, Any, None]:
        return websocket_endpoint(WebSocket(scope, receive=receive, send=send))


serve_websocket = _WebSocketApp()
"""The endpoint as the app's fast path calls it (server/app.py): straight from the
server, past the middleware stack and the router, whose coroutine frames and
closures (~10 of them, ~3 KiB) would otherwise stay alive for every connection's life.
None of the middleware does anything for ``/v1/ws`` but the request id, set above."""
WEBSOCKET_PATH = "/v1/ws"

routes: list[BaseRoute] = [
    WebSocketRoute(WEBSOCKET_PATH, serve_websocket, name="websocket_endpoint")
]


async def _budget_left(container: Container, user_id: uuid.UUID) -> dict[str, Any] | None:
    """The ``welcome`` frame's ``budget``; a database that does not answer leaves it out
    rather than the connection (the next question is checked all the same)."""
    try:
        return await container.budgets.left(user_id)
    except ParleyError as exc:
        log.warning("budget for the welcome frame failed: %s", exc.message)
        return None
