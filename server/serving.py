"""How Parley is served by uvicorn: one place for the WebSocket and shutdown settings,
used by ``parley serve`` and by the tests' live servers alike."""

from __future__ import annotations

from typing import Any

import uvicorn
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from server.config import Settings

HEARTBEAT_CLOSE_CODE = 4408


class HeartbeatWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol, closing a silent peer with 4408 instead of 1011.

    uvicorn pings every ``ws_ping_interval`` and gives up after ``ws_ping_timeout``;
    with both at the heartbeat interval a peer that answers nothing for two intervals
    is closed, with the code the wire contract names.
    """

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
