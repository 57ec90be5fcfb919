"""How Parley is served by uvicorn: one place for the WebSocket and shutdown settings,
used by ``parley serve`` and by the tests' live servers alike."""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

from realtime.close_codes import CloseCode
from server.config import Settings
from server.logging import redact_uvicorn_logs

# ASGI scope extension: ``await send_texts(list_of_str)`` sends text frames with one
# socket write. The writer (server/ws/endpoint.py) falls back to ``websocket.send`` without it.
SEND_TEXTS_EXTENSION = "parley.send_texts"
# ``await wait_writable()``: returns once the transport's buffer is below its high-water
# mark, so that the writer leaves a backlog in the bounded outbox, not in the transport.
WAIT_WRITABLE_EXTENSION = "parley.wait_writable"
# ``close_now(code, reason)``: write a close frame at once, past the writer (which may be
# waiting for a peer that stopped reading), for a connection dropped as too slow.
CLOSE_NOW_EXTENSION = "parley.close_now"
# After the app ends, how long a peer has to take what is still buffered for it (the
# close frame last) before the socket is aborted.
ABORT_AFTER_S = 2.0


# Open sockets per peer address, per server (its uvicorn Config): a connection keeps
# its transport when it upgrades to WebSocket, so both protocols share the entry.
_peers: weakref.WeakKeyDictionary[uvicorn.Config, dict[str, set[asyncio.BaseTransport]]] = (
    weakref.WeakKeyDictionary()
)


def _peer_host(transport: asyncio.BaseTransport) -> str | None:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else None


def _track(config: uvicorn.Config, transport: asyncio.BaseTransport, cap: int) -> bool:
    """Count a new socket against its address; False when the address is at ``cap``."""
    host = _peer_host(transport)
    if host is None:
        return True
    open_ = _peers.setdefault(config, {}).setdefault(host, set())
    if transport in open_:
        return True
    if len(open_) >= cap:
        return False
    open_.add(transport)
    return True


def _untrack(config: uvicorn.Config, transport: asyncio.BaseTransport) -> None:
    by_host = _peers.get(config)
    host = _peer_host(transport)
    if by_host is None or host is None:
        return
    open_ = by_host.get(host)
    if open_ is not None:
        open_.discard(transport)
        if not open_:
            del by_host[host]


def _plain_response(status: bytes, code: str, message: str, extra: bytes = b"") -> bytes:
    body = orjson.dumps({"success": False, "error": {"code": code, "message": message}})
    head = (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n"
    )
    return head + extra + b"connection: close\r\n\r\n" + body


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol with a deadline for a request's headers and a cap on
    open sockets per peer address.

    uvicorn times out idle keep-alive connections but not a socket that never sends a
    request, or sends its headers a byte at a time: those were held forever. The
    deadline runs from the socket's opening (and from each later request's first byte)
    to the end of the headers; past it the socket gets a 408 and is closed. A socket
    over the address's cap gets a 429 and is closed before anything is read.
    """

    header_timeout_s: float = 10.0
    max_per_ip: int = 0  # 0: no cap at this level

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._tracked = False
        if self.max_per_ip:
            if not _track(self.config, transport, self.max_per_ip):
                transport.write(
                    _plain_response(
                        b"429 Too Many Requests",
                        "rate_limited",
                        "too many connections from this address",
                        b"retry-after: 5\r\n",
                    )
                )
                transport.close()
                return
            self._tracked = True
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        if self._tracked:
            _untrack(self.config, self.transport)
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._disarm_header_timer()
        super().on_headers_complete()

    def handle_websocket_upgrade(self) -> None:
        self._disarm_header_timer()
        # The WebSocket protocol takes the transport over, and its entry (see
        # ``HeartbeatWebSocketProtocol.connection_lost``).
        self._tracked = False
        super().handle_websocket_upgrade()

    def _arm_header_timer(self) -> None:
        if getattr(self, "_header_timer", None) is None:
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_late)

    def _disarm_header_timer(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        self.transport.write(
            _plain_response(b"408 Request Timeout", "bad_request", "request headers took too long")
        )
        self.transport.close()


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
    """uvicorn's WebSocket protocol, closing a silent peer with ``HEARTBEAT_TIMEOUT``
    (4408) instead of 1011.

    uvicorn pings every ``ws_ping_interval`` and gives up after ``ws_ping_timeout``;
    with both at the heartbeat interval a peer that answers nothing for two intervals
    is closed, with the code the wire contract names.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = _ReceiveQueue()  # type: ignore[assignment]
        self.writable = _WritableFlag()  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        _untrack(self.config, self.transport)
        super().connection_lost(exc)

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        # uvicorn keeps the parsed handshake request but never reads it again, and the
        # websockets parser generator keeps it too (a local in its frame): empty its
        # headers (~2.5 KiB with a Bearer token). The ASGI scope has its own copy.
        self.request = None  # type: ignore[assignment]
        event.headers.clear()
        scope = getattr(self, "scope", None)
        if scope is not None:
            extensions = scope["extensions"]
            extensions[SEND_TEXTS_EXTENSION] = self.send_texts
            extensions[WAIT_WRITABLE_EXTENSION] = self.writable.wait
            extensions[CLOSE_NOW_EXTENSION] = self.close_now

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

    def close_now(self, code: int, reason: str) -> None:
        """Queue a close frame behind what the transport holds, and end the app's reads.

        The peer gets it once it reads what was written before (at most the transport's
        high-water mark and one write); ``run_asgi`` aborts the socket if it does not.
        """
        if self.close_sent or self.disconnected or not self.handshake_complete:
            return
        if self.transport.is_closing():
            return
        self.conn.send_close(code, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})

    def keepalive_timeout(self) -> None:
        self.pong_timer = None
        self.pending_ping_payload = None
        if self.close_sent or self.transport.is_closing():
            return
        self.conn.fail(CloseCode.HEARTBEAT_TIMEOUT, "no frame for two heartbeat intervals")
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.transport.close()

    async def run_asgi(self) -> None:
        await super().run_asgi()
        if self.transport.get_write_buffer_size() == 0:
            return
        # The app gave up on a peer that stopped reading (server/ws/endpoint.py ``_abandon``):
        # what is still buffered would never drain, and close() would wait for it.
        if not self.close_sent:
            self.transport.abort()
            return
        # A close frame went out behind a backlog: give the peer a moment to read it,
        # then let go (close() alone would hold the socket until the peer reads).
        self.loop.call_later(ABORT_AFTER_S, self._abort_if_open)

    def _abort_if_open(self) -> None:
        if not self.disconnected:
            self.transport.abort()


def uvicorn_config(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Config:
    redact_uvicorn_logs()  # no ?ticket= in uvicorn's handshake and access lines
    http = type(
        "GuardedHttpProtocol",
        (GuardedHttpProtocol,),
        {
            "header_timeout_s": settings.header_timeout_s,
            # Behind a proxy every socket comes from the proxy: the WebSocket endpoint
            # caps by the forwarded address instead (server/ws/endpoint.py).
            "max_per_ip": 0 if settings.trust_proxy_headers else settings.max_connections_per_ip,
        },
    )
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "http": http,
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
