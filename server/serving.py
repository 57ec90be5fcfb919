"""How Parley is served by uvicorn: one place for the WebSocket and shutdown settings,
used by ``parley serve`` and by the tests' live servers alike."""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

from server.config import Settings
from server.logging import redact_uvicorn_logs

HEARTBEAT_CLOSE_CODE = 4408
# ASGI scope extension: ``await send_texts(list_of_str)`` sends text frames with one
# socket write. The writer (server/ws.py) falls back to ``websocket.send`` without it.
SEND_TEXTS_EXTENSION = "parley.send_texts"


class _ReceiveQueue:
    """What uvicorn's WebSocket protocol uses of ``asyncio.Queue``: ``put_nowait``,
    ``get`` and ``empty``. An ``asyncio.Queue`` holds three deques and an Event, ~3 KiB
    per connection before a frame arrives; this holds a list, and a future only while
    the app waits."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Any:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)

    def empty(self) -> bool:
        return not self._items


class _WritableFlag:
    """What uvicorn uses of the ``writable`` Event (set, clear, is_set, wait), without
    the Event's deque: waiters are made only while the transport is paused."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future[None]] = []

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        while not self._set:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
        return True


class HeartbeatWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol, closing a silent peer with 4408 instead of 1011.

    uvicorn pings every ``ws_ping_interval`` and gives up after ``ws_ping_timeout``;
    with both at the heartbeat interval a peer that answers nothing for two intervals
    is closed, with the code the wire contract names.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = _ReceiveQueue()  # type: ignore[assignment]
        self.writable = _WritableFlag()  # type: ignore[assignment]

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        # uvicorn keeps the parsed handshake request but never reads it again, and the
        # websockets parser generator keeps it too (a local in its frame): empty its
        # headers (~2.5 KiB with a Bearer token). The ASGI scope has its own copy.
        self.request = None  # type: ignore[assignment]
        event.headers.clear()
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][SEND_TEXTS_EXTENSION] = self.send_texts

    def start_keepalive(self) -> None:
        # Called by uvicorn once the 101 response has been written: the handshake is
        # over. The response (its headers) is only read before that.
        super().start_keepalive()
        self.response = None  # type: ignore[assignment]
        # uvicorn sets ~37 attributes, past what a shared-keys instance dict holds; the
        # dict it grew into has room for 85 (1.5 KiB). A copy is sized for what is there
        # (~0.8 KiB), and no attribute is added after this point.
        self.__dict__ = {name: value for name, value in self.__dict__.items()}

    async def send_texts(self, texts: list[str]) -> None:
        """Frame a batch and write it in one ``transport.write``.

        A write is a syscall, the largest cost of a broadcast; one per queued batch
        instead of one per frame, and without the per-frame trip through the ASGI
        send chain, lets a busy connection catch up in one go.
        """
        await self.writable.wait()
        if self.disconnected:
            raise ClientDisconnected()
        # Closing (either side sent a close frame) is not open either: websockets would
        # raise its own InvalidState, which the writer does not expect.
        if self.close_sent or not self.handshake_complete or self.conn.state is not State.OPEN:
            raise RuntimeError("the WebSocket is not open for sending")
        for text in texts:
            self.conn.send_text(text.encode())
        self.transport.write(b"".join(self.conn.data_to_send()))

    def keepalive_timeout(self) -> None:
        self.pong_timer = None
        self.pending_ping_payload = None
        if self.close_sent or self.transport.is_closing():
            return
        self.conn.fail(HEARTBEAT_CLOSE_CODE, "no frame for two heartbeat intervals")
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.transport.close()

    async def run_asgi(self) -> None:
        await super().run_asgi()
        # The app gave up on a peer that stopped reading (server/ws.py ``_abandon``):
        # what is still buffered would never drain, and close() would wait for it.
        if not self.close_sent and self.transport.get_write_buffer_size() > 0:
            self.transport.abort()


def uvicorn_config(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Config:
    redact_uvicorn_logs()  # no ?ticket= in uvicorn's handshake and access lines
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "ws": HeartbeatWebSocketProtocol,
        "ws_ping_interval": settings.heartbeat_s,
        "ws_ping_timeout": settings.heartbeat_s,
        "ws_max_size": settings.max_frame_bytes,
        # Per-connection zlib contexts cost hundreds of KiB each and a compression pass
        # per member per broadcast; chat frames are small. Off.
        "ws_per_message_deflate": False,
        "timeout_graceful_shutdown": settings.drain_timeout_s,
        "proxy_headers": settings.trust_proxy_headers,
        "server_header": False,
        "log_config": None,
        "lifespan": "on",
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)
