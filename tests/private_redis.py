"""A Redis server of a test's own, on a free port, to kill, pause and restart.

The shared Redis at 127.0.0.1:6379 serves every engineer's tests at once: never stop
or pause it. Faults are played on one of these instead.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as redis

from tests.services import services_required


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """``redis-server`` on a free loopback port; ``stop``/``start`` keep the port."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.dir = tmp_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        try:
            for _ in range(100):
                try:
                    await client.ping()
                    return
                except redis.ConnectionError:
                    await asyncio.sleep(0.05)
            raise TimeoutError("private redis did not start")
        finally:
            await client.aclose()

    def stop(self) -> None:
        """SIGKILL: connections are cut at once, nothing is saved."""
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGCONT)  # a paused server dies too
            self.process.kill()
            self.process.wait(10)

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    async def client_names(self) -> list[str]:
        """The ``CLIENT SETNAME`` of every connection the server holds now."""
        client = redis.Redis.from_url(self.url, decode_responses=True)
        try:
            clients = await client.client_list()
        finally:
            await client.aclose()
        return [c["name"] for c in clients]


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        if services_required():
            pytest.fail("redis-server is not installed, and PARLEY_REQUIRE_SERVICES is set")
        pytest.skip("redis-server is not installed")
    server = PrivateRedis(tmp_path)
    await server.start()
    yield server
    server.stop()


class CuttableProxy:
    """A TCP proxy in front of a Redis: ``cut`` drops every connection through it and
    refuses new ones (accepted, then closed at once) until ``restore``.

    Puts one node, and only that node, out of Redis's reach while its peers stay.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.cut_off = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut(self) -> None:
        self.cut_off = True
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def restore(self) -> None:
        self.cut_off = False

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_off:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.transport.abort()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()  # one side gone: both go, as a cut would


@pytest.fixture
async def redis_proxy(private_redis: PrivateRedis) -> AsyncIterator[CuttableProxy]:
    proxy = CuttableProxy(private_redis.port)
    await proxy.start()
    yield proxy
    await proxy.close()
