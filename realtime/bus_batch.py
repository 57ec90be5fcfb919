"""Publishing to a broker in batches: per channel, per event-loop turn (issue 19).

A busy room publishes many small envelopes, and on Redis each one was its own
``PUBLISH``: parsed by Redis, pushed to every subscriber, and read, parsed and
dispatched by every node's reader, one by one. ``PublishBatcher`` gathers what is
published to a channel within one event-loop turn (and, while a batch is in flight,
whatever comes meanwhile) into one message; ``split`` takes it apart on the receiving
side, before the hub sees it, so the hub still gets one ``(channel, envelope)`` per
envelope, in publish order.

Wire format: a message on its own goes as it is (an envelope starts with ``{``); a
batch is ``MARKER`` followed by each message as a 4-byte big-endian length and its
bytes. Every caller's ``publish`` returns once its batch went out, or raises what the
send raised, so a failed batch fails each of its publishers as a failed ``PUBLISH``
did before: each goes through the hub's own recovery (local delivery, resync).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable, Sequence

from errors import Unavailable

MARKER = b"\x00PB1"
_LENGTH = struct.Struct(">I")
# One message stays modest for the broker's output buffers and the readers' parsers.
MAX_BATCH_MESSAGES = 1024
MAX_BATCH_BYTES = 1 << 20

SendBatch = Callable[[Sequence[tuple[str, bytes]]], Awaitable[None]]
"""Sends ``(channel, data)`` messages, in order; raises (a ``ParleyError``) on failure."""


def join(messages: Sequence[bytes]) -> bytes:
    """One bus message carrying ``messages`` (a single one goes as it is)."""
    if len(messages) == 1:
        return messages[0]
    pack = _LENGTH.pack
    parts = [MARKER]
    for data in messages:
        parts.append(pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def split(data: bytes) -> list[bytes]:
    """The messages a bus message carries, in order."""
    if not data.startswith(MARKER):
        return [data]
    out: list[bytes] = []
    at, end = len(MARKER), len(data)
    unpack_from = _LENGTH.unpack_from
    while at < end:
        (size,) = unpack_from(data, at)
        at += 4
        out.append(data[at : at + size])
        at += size
    return out


class _Pending:
    __slots__ = ("futures", "messages", "size")

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.futures: list[asyncio.Future[None]] = []
        self.size = 0


class PublishBatcher:
    """Gathers publishes per channel; at most one send in flight, so order holds.

    Messages published to one channel reach ``send`` in publish order, and batches
    are sent one after another, so the broker sees them in that order too.
    """

    def __init__(self, send: SendBatch, what: str = "bus publish") -> None:
        self._send = send
        self._what = what
        # Insertion-ordered: channels go out in the order they were first published to.
        self._queue: dict[str, list[_Pending]] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False
        # Bus messages sent and envelopes they carried (diagnostics and tests).
        self.sent_messages = 0
        self.sent_envelopes = 0

    async def publish(self, channel: str, data: bytes) -> None:
        if self._closed:
            raise Unavailable(f"{self._what} is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        chunks = self._queue.get(channel)
        if chunks is None:
            chunks = self._queue[channel] = [_Pending()]
        chunk = chunks[-1]
        if chunk.messages and (
            len(chunk.messages) >= MAX_BATCH_MESSAGES or chunk.size + len(data) > MAX_BATCH_BYTES
        ):
            chunk = _Pending()
            chunks.append(chunk)
        chunk.messages.append(data)
        chunk.futures.append(future)
        chunk.size += len(data)
        if self._flusher is None:
            # Starts on the next iteration: everything published before then joins.
            self._flusher = loop.create_task(self._flush(), name=f"batch:{self._what}")
        await future

    async def close(self) -> None:
        """Stops sending; waiting publishers get ``Unavailable``."""
        self._closed = True
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            flusher.cancel()
            await asyncio.gather(flusher, return_exceptions=True)
        queue, self._queue = self._queue, {}
        self._fail([c for chunks in queue.values() for c in chunks], None)

    async def _flush(self) -> None:
        batch: list[_Pending] = []
        try:
            while self._queue:
                queue, self._queue = self._queue, {}
                items: list[tuple[str, bytes]] = []
                batch = []
                for channel, chunks in queue.items():
                    for chunk in chunks:
                        items.append((channel, join(chunk.messages)))
                        batch.append(chunk)
                try:
                    await self._send(items)
                except Exception as exc:
                    self._fail(batch, exc)
                else:
                    self.sent_messages += len(items)
                    for chunk in batch:
                        self.sent_envelopes += len(chunk.messages)
                        for future in chunk.futures:
                            if not future.done():
                                future.set_result(None)
                batch = []
        finally:
            # Not empty only when cancelled mid-send.
            self._fail(batch, None)
            self._flusher = None

    def _fail(self, batch: list[_Pending], cause: Exception | None) -> None:
        for chunk in batch:
            for future in chunk.futures:
                if future.done():
                    continue
                if cause is None:
                    future.set_exception(Unavailable(f"{self._what} is closed"))
                else:
                    future.set_exception(cause)
                # Retrieved: a publisher cancelled meanwhile no longer waits for it.
                future.exception()
