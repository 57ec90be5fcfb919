"""``GET /v1/ws``: the handshake, then a reader and a writer around the hub.

Credentials, in the contract's order: ``Authorization: Bearer``; the ``jwt`` cookie,
only from an allowed Origin (a cookie from a refused origin is ignored, and the
handshake is refused unless a ticket follows); a single-use ``?ticket=``. A refused
handshake is an HTTP 401/403 with the REST error envelope, never an upgrade.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import UTC, datetime

from starlette.routing import BaseRoute, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from realtime.connection import Connection
from realtime.frames import encode, welcome
from realtime.handler import TOKEN_EXPIRED_CLOSE_CODE, ConnectionHandler
from realtime.hub import Hub
from server.container import Container, container_of
from server.errors import Forbidden, ParleyError, Unauthorized
from server.http import error_response
from server.logging import conn_id_var
from server.security.origins import origin_allowed
from server.services.accounts import Principal
from server.serving import SEND_TEXTS_EXTENSION

log = logging.getLogger("parley.ws")

# How long the writer may take to flush and send a requested close.
CLOSE_FLUSH_GRACE_S = 2.0
EXPIRY_RECHECK_S = 30.0


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
    hub: Hub = container.extras["hub"]
    try:
        principal = await authenticate_handshake(container, websocket)
    except ParleyError as exc:
        container.metrics.handshake_refused.labels(exc.code).inc()
        await websocket.send_denial_response(error_response(exc))
        return
    await websocket.accept()
    conn = Connection(
        conn_id=uuid.uuid4().hex,
        user_id=str(principal.user_id),
        name=principal.name,
        role=principal.role,
        expires_at=principal.expires_at,
        max_outbox=container.settings.send_queue_frames,
        on_overflow=lambda _: container.metrics.slow_clients_dropped.inc(),
    )
    conn_id_var.set(conn.conn_id)
    abandon = _Abandon(conn)
    handler = ConnectionHandler(container, hub, conn)
    hub.register(conn)
    conn.send(
        encode(welcome(conn.conn_id, conn.user_id, conn.name, container.settings.heartbeat_s))
    )
    # The reader runs in this task and the writer in its own; when the writer ends (a
    # close went out, the peer went away) or the close is abandoned, the reader is
    # cancelled. One task fewer per connection than a reader task, and no asyncio.wait
    # bookkeeping: ~2 KiB per idle connection.
    endpoint = asyncio.current_task()
    assert endpoint is not None
    stopping = False

    def stop(_: object = None) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            endpoint.cancel()

    writer = asyncio.create_task(_write(websocket, conn), name=f"ws-write-{conn.conn_id}")
    writer.add_done_callback(stop)
    abandon.given_up.add_done_callback(stop)
    expiry = _ExpiryTimer(conn)
    try:
        await _read(websocket, handler)
    except asyncio.CancelledError:
        if not stopping or endpoint.cancelling() > 1:
            raise  # cancelled from outside (shutdown): not ours to swallow
        endpoint.uncancel()
    except Exception:
        log.exception("connection reader failed")
    finally:
        stopping = True
        expiry.cancel()
        abandon.cancel()
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        if not writer.cancelled() and writer.exception() is not None:
            log.error("connection writer failed", exc_info=writer.exception())
        await hub.unregister(conn)


async def _read(websocket: WebSocket, handler: ConnectionHandler) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is not None:
            await handler.handle_text(text)
        else:
            handler.handle_binary()
        if handler.conn.closing is not None:
            # The writer closes the socket after flushing; stop reading new work.
            await asyncio.Event().wait()


async def _write(websocket: WebSocket, conn: Connection) -> None:
    # One socket write per queued batch where the server offers it (server/serving.py).
    send_texts = websocket.scope.get("extensions", {}).get(SEND_TEXTS_EXTENSION)
    try:
        while True:
            batch, closing = await conn.next_batch()
            if send_texts is not None and batch:
                await send_texts(batch)
            else:
                for text in batch:
                    await websocket.send({"type": "websocket.send", "text": text})
            if closing is not None:
                code, reason = closing
                with contextlib.suppress(RuntimeError, WebSocketDisconnect, OSError):
                    await websocket.close(code, reason)
                return
    except (WebSocketDisconnect, OSError, RuntimeError):
        return


class _ExpiryTimer:
    """Closes with 4401 when the access token expires and no ``refresh`` came.

    A loop timer rather than a task: a task parked in ``wait_for`` costs ~3 KiB per
    idle connection. ``refresh`` moves ``conn.expires_at``; the timer re-reads it when it
    fires, and fires at least every ``EXPIRY_RECHECK_S`` so that a refresh to a token
    expiring sooner is honoured too.
    """

    __slots__ = ("_conn", "_handle")

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._handle: asyncio.TimerHandle | None = None
        self._check()

    def _check(self) -> None:
        conn = self._conn
        if conn.expires_at is None or conn.closing is not None:
            return
        remaining = (conn.expires_at - datetime.now(UTC)).total_seconds()
        if remaining <= 0:
            conn.close(TOKEN_EXPIRED_CLOSE_CODE, "access token expired")
            return
        loop = asyncio.get_running_loop()
        self._handle = loop.call_later(min(remaining, EXPIRY_RECHECK_S), self._check)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()


class _Abandon:
    """Ends the connection (``given_up``) when a requested close has not happened in time.

    A peer that stops reading leaves the writer waiting on a send forever, so the
    close it was asked for never goes out; without this it would stay registered. A
    timer armed by the close request rather than a task waiting for it: an idle
    connection pays nothing for it.
    """

    __slots__ = ("_handle", "_loop", "given_up")

    def __init__(self, conn: Connection) -> None:
        self._loop = asyncio.get_running_loop()
        self.given_up: asyncio.Future[None] = self._loop.create_future()
        self._handle: asyncio.TimerHandle | None = None
        conn.on_close = self._arm

    def _arm(self) -> None:
        if self._handle is None:
            self._handle = self._loop.call_later(CLOSE_FLUSH_GRACE_S, self._give_up)

    def _give_up(self) -> None:
        if not self.given_up.done():
            log.info("peer did not take its close in %.0f s; dropping it", CLOSE_FLUSH_GRACE_S)
            self.given_up.set_result(None)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self.given_up.cancel()


routes: list[BaseRoute] = [WebSocketRoute("/v1/ws", websocket_endpoint)]
