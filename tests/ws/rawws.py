"""A WebSocket client done by hand over a raw TCP socket, for the peers that the
``websockets`` library will not play: one that never answers a ping, one that stops
reading. It speaks just enough RFC 6455 to upgrade, send masked text frames and read
server frames."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
from dataclasses import dataclass

import orjson

from tests.wsclient import WSClient

OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA


@dataclass
class ServerFrame:
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        if self.opcode != OP_CLOSE or len(self.payload) < 2:
            return None
        return int(struct.unpack("!H", self.payload[:2])[0])

    def json(self) -> dict[str, object]:
        data = orjson.loads(self.payload)
        assert isinstance(data, dict)
        return data


class RawWebSocket:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(
        cls, port: int, token: str, *, receive_buffer: int | None = None
    ) -> RawWebSocket:
        """Upgrade with a Bearer token. ``receive_buffer`` shrinks the kernel's receive
        buffer so that a client that stops reading pushes back on the server quickly."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            # Must be set before connect for the window to be advertised small.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=2**20)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                "GET /v1/ws HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Authorization: Bearer {token}\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def send_json(self, frame: dict[str, object]) -> None:
        self.writer.write(_client_frame(OP_TEXT, orjson.dumps(frame)))
        await self.writer.drain()

    async def recv(self) -> ServerFrame:
        """The next server frame; control frames included, nothing answered."""
        first, second = await self.reader.readexactly(2)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return ServerFrame(first & 0x0F, await self.reader.readexactly(length))

    async def recv_json(self, frame_type: str) -> dict[str, object]:
        """Skip to the next text frame of that type (pings go unanswered)."""
        while True:
            frame = await self.recv()
            if frame.opcode == OP_TEXT and frame.json().get("type") == frame_type:
                return frame.json()

    async def recv_close(self) -> int | None:
        """Read, answering nothing, until the server's close frame; its code."""
        while True:
            frame = await self.recv()
            if frame.opcode == OP_CLOSE:
                return frame.close_code

    def close(self) -> None:
        self.writer.transport.abort()


async def close_code(client: WSClient, timeout: float = 5.0) -> int | None:
    """The code the server closed ``client`` with.

    ``WSClient.closed`` never resolves on websockets 14+ (it reads ``close_rcvd`` off
    the connection, which moved to ``connection.protocol``), so wait on the
    connection itself.
    """
    await asyncio.wait_for(client.connection.wait_closed(), timeout)
    return client.connection.close_code


def _client_frame(opcode: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 2**16:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked
