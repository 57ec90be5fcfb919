"""A loopback TCP proxy for fault tests: put it in front of PostgreSQL (or anything
else spoken over TCP) and cut, refuse, blackhole or slow what goes through it.

``cut()`` resets every open connection; ``refuse()`` stops listening, so a new
connection is refused by the kernel (ECONNREFUSED) until ``restore()``;
``blackhole()`` is a partition: new connections are accepted and nothing moves in
either direction on any connection (the bytes are held, as TCP would keep
retransmitting them) until ``restore()``; ``latency_s`` delays every chunk, each way.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.latency_s = 0.0
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self.cut()
        for pipe in list(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    # Faults ---------------------------------------------------------------------------

    def cut(self) -> None:
        """Reset every connection open now (new ones still pass)."""
        for writer in list(self._writers):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                # RST rather than FIN: what a dead peer or a middlebox dropping state does.
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            writer.transport.abort()
        self._writers.clear()

    async def refuse(self, *, cut: bool = True) -> None:
        """Stop listening: new connections are refused; open ones are cut too unless
        ``cut`` is false."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if cut:
            self.cut()

    def blackhole(self) -> None:
        """A partition: nothing moves on any connection, new ones hang after accept."""
        self._flowing.clear()

    async def restore(self) -> None:
        """Listen again (same port) and let bytes flow; latency stays as set."""
        self._flowing.set()
        if self._server is None:
            await self.start()

    # Piping ---------------------------------------------------------------------------

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.add(client_w)
        try:
            await self._flowing.wait()
            upstream_r, upstream_w = await asyncio.open_connection(*self.target)
        except (OSError, asyncio.CancelledError):
            client_w.transport.abort()
            self._writers.discard(client_w)
            return
        self._writers.add(upstream_w)
        pipes = [
            asyncio.create_task(self._pipe(client_r, upstream_w)),
            asyncio.create_task(self._pipe(upstream_r, client_w)),
        ]
        self._pipes.update(pipes)
        try:
            await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)
            self._pipes.difference_update(pipes)
            for writer in (client_w, upstream_w):
                writer.transport.abort()
                self._writers.discard(writer)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def forward() -> None:
            while True:
                due, chunk = await queue.get()
                if not chunk:
                    return
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                await self._flowing.wait()
                writer.write(chunk)
                await writer.drain()

        forwarder = asyncio.create_task(forward())
        try:
            while True:
                chunk = await reader.read(65536)
                queue.put_nowait((loop.time() + self.latency_s, chunk))
                if not chunk:
                    break
            await forwarder
        except (OSError, ConnectionError):
            pass
        finally:
            forwarder.cancel()
            await asyncio.gather(forwarder, return_exceptions=True)


@contextlib.asynccontextmanager
async def tcp_proxy(target_host: str, target_port: int) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy(target_host, target_port)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()
