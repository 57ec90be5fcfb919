"""A test client over a real WebSocket (the ``websockets`` library), the way plugins
talk to Parley: send frames, await the frames that matter, keep everything seen."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect

Frame = dict[str, Any]
_ids = itertools.count(1)


class WSClient:
    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.seen: list[Frame] = []
        self._unread: list[Frame] = []
        self._arrived = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())
        self.closed: asyncio.Future[tuple[int | None, str]] = (
            asyncio.get_running_loop().create_future()
        )

    @classmethod
    async def connect(
        cls, url: str, token: str | None = None, **kwargs: Any
    ) -> tuple[WSClient, Frame]:
        headers = dict(kwargs.pop("additional_headers", {}) or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        connection = await connect(url, additional_headers=headers, **kwargs)
        client = cls(connection)
        welcome = await client.next("welcome")
        return client, welcome

    async def _read(self) -> None:
        try:
            async for raw in self.connection:
                frame = orjson.loads(raw)
                async with self._arrived:
                    self.seen.append(frame)
                    self._unread.append(frame)
                    self._arrived.notify_all()
        except Exception:
            pass
        finally:
            if not self.closed.done():
                code = self.connection.close_code
                reason = self.connection.close_reason or ""
                self.closed.set_result((code, reason) if code else (None, "connection lost"))
            async with self._arrived:
                self._arrived.notify_all()

    async def send(self, frame: Frame) -> None:
        await self.connection.send(orjson.dumps(frame).decode())

    async def send_raw(self, data: str | bytes) -> None:
        await self.connection.send(data)

    async def next(
        self,
        frame_type: str | None = None,
        where: Callable[[Frame], bool] | None = None,
        timeout: float = 5.0,
    ) -> Frame:
        """The first unread frame of that type (and matching ``where``); consumes it."""

        def match(frame: Frame) -> bool:
            return (frame_type is None or frame.get("type") == frame_type) and (
                where is None or where(frame)
            )

        async def wait() -> Frame:
            async with self._arrived:
                while True:
                    for i, frame in enumerate(self._unread):
                        if match(frame):
                            return self._unread.pop(i)
                    if self.closed.done():
                        raise ConnectionError(f"closed {self.closed.result()} before {frame_type}")
                    await self._arrived.wait()

        return await asyncio.wait_for(wait(), timeout)

    async def request(self, frame: Frame, timeout: float = 5.0) -> Frame:
        """Send a frame with a fresh id and return the one reply carrying that id."""
        frame_id = f"r{next(_ids)}"
        await self.send({**frame, "id": frame_id})
        return await self.next(where=lambda f: f.get("id") == frame_id, timeout=timeout)

    def unread(self, frame_type: str | None = None) -> list[Frame]:
        return [f for f in self._unread if frame_type is None or f.get("type") == frame_type]

    async def close(self) -> None:
        await self.connection.close()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)
