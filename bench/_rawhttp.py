"""A bare HTTP/1.1 client for the benchmarks: one keep-alive connection, a request
written in one piece, a chunked response read line by line and nothing else.

httpx costs the benchmark's process a few hundred microseconds per request (building
the request, the connection pool, h11, the response object, its byte and line
iterators), and most of it lands between the server's first token and the moment the
benchmark sees it. A WebSocket client pays far less per frame; comparing the two
would charge httpx's work to the server. This client reads what the server sent with
as little work as a WebSocket client does, so that the difference between the paths
is the server's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import orjson


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    _reader: asyncio.StreamReader

    async def lines(self) -> AsyncIterator[bytes]:
        """The body's lines (without their ends), to the body's end."""
        pending = b""
        reader = self._reader
        if self.headers.get("transfer-encoding") != "chunked":
            body = await reader.readexactly(int(self.headers.get("content-length", "0")))
            for line in body.split(b"\n"):
                yield line
            return
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # no trailers
                break
            pending += (await reader.readexactly(size + 2))[:-2]
            *complete, pending = pending.split(b"\n")
            for line in complete:
                yield line
        if pending:
            yield pending


class RawHTTP:
    def __init__(self, host: str, port: int) -> None:
        self._host, self._port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def aclose(self) -> None:
        if self._writer is not None:
            self._writer.close()

    @asynccontextmanager
    async def post(
        self, path: str, body: object, headers: dict[str, str]
    ) -> AsyncIterator[RawResponse]:
        """POST ``body`` as JSON; the response, whose body must be read to its end."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        assert self._reader is not None
        content = orjson.dumps(body)
        head = [
            f"POST {path} HTTP/1.1",
            f"Host: {self._host}:{self._port}",
            "Content-Type: application/json",
            f"Content-Length: {len(content)}",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        self._writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + content)
        raw = await self._reader.readuntil(b"\r\n\r\n")
        status_line, *fields = raw[:-4].decode("latin-1").split("\r\n")
        parsed = {}
        for field in fields:
            name, _, value = field.partition(":")
            parsed[name.strip().lower()] = value.strip()
        yield RawResponse(int(status_line.split()[1]), parsed, self._reader)
