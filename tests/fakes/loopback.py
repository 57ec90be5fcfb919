"""A Starlette app served by a real uvicorn on 127.0.0.1, in a background thread."""

from __future__ import annotations

import socket
import threading

import uvicorn
from starlette.applications import Starlette

# The services faked here sit behind CDNs that keep an idle HTTP/1.1 connection far
# longer than uvicorn's 5 s (Cloudflare, in front of OpenRouter: 400 s).
KEEP_ALIVE_S = 400


class LoopbackServer:
    """uvicorn on a socket bound before the thread starts, so the port is known and
    connections queue in the backlog until the server accepts them: no start-up wait."""

    def __init__(
        self, app: Starlette, *, http: str = "h11", backlog: int = 64, grace_s: float = 1
    ) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(backlog)
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            # Leave this process's logging alone: uvicorn's own config would switch its
            # loggers' propagation off and their level to WARNING for every server the
            # tests start afterwards (their handshake and access lines then vanish).
            log_config=None,
            log_level=None,
            lifespan="off",
            ws="none",
            http=http,
            timeout_graceful_shutdown=grace_s,
            timeout_keep_alive=KEEP_ALIVE_S,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()
