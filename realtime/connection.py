"""One client connection as the hub sees it: identity, rooms, an outbox, cursors.

The outbox is bounded, in frames and in bytes (characters of the encoded JSON, which
is bytes for ASCII). Producers (the hub's fan-out, replies) never wait on a slow
client: when the outbox is full the connection is marked for closing and dropped,
so one slow reader can neither grow memory nor stall a room. The writer takes frames
out only when the socket can take them (server/ws/endpoint.py), so a client that stops reading
leaves its backlog here, counted, rather than in the transport's unbounded buffer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from realtime.close_codes import CloseCode
from realtime.envelope import Envelope


@dataclass
class Membership:
    """This connection's view of one room it joined."""

    # Messages with seq <= floor were covered by the joined reply (last_seq/history).
    floor: int
    # While the joined reply is being prepared, room events wait here.
    pending: list[Envelope] | None = None


@dataclass(slots=True)
class StreamCursor:
    """What this connection was sent of one stream: each index once, the end once,
    whichever way an index comes (live, a gap fill from the log, a resume)."""

    # Indices below ``base`` are the client's own business (it resumed past them, or
    # joined mid-stream and resumes for them). None: the stream was listed in this
    # connection's ``joined.streams``, so the client's ``resume`` will say where it is.
    base: int | None = 0
    sent: int = 0  # bit i set: index i went out on this connection
    ended: bool = False  # the stream.end went out
    # While the stream log is read for this connection, live frames wait here.
    pending: list[Envelope] | None = None
    readers: int = 0  # log reads in flight for it

    def was_sent(self, index: int) -> bool:
        return bool(self.sent >> index & 1)

    def mark(self, index: int) -> None:
        self.sent |= 1 << index

    def first_missing(self, start: int, stop: int) -> int | None:
        """The lowest index in ``[start, stop)`` not sent yet, or None."""
        if stop <= start:
            return None
        wanted = ((1 << stop) - 1) ^ ((1 << start) - 1)
        missing = wanted & ~self.sent
        return (missing & -missing).bit_length() - 1 if missing else None


@dataclass(eq=False, slots=True)  # slots: no per-instance __dict__ for idle connections
class Connection:
    conn_id: str
    user_id: str
    name: str
    role: str
    expires_at: datetime | None
    max_outbox: int
    on_overflow: Callable[[Connection], None]
    # 0: no bound in bytes (only ``max_outbox`` frames).
    max_outbox_bytes: int = 0
    rooms: dict[str, Membership] = field(default_factory=dict)
    cursors: dict[str, StreamCursor] = field(default_factory=dict)
    typing_in: set[str] = field(default_factory=set)
    strikes: int = 0
    # The refresh family of the credential that opened it (or of its last refresh):
    # revoking the family closes the connection.
    family: str | None = None
    closing: tuple[int, str] | None = None
    # Called once with ``closing``: lets the endpoint give up on a writer stuck on a dead
    # peer (a callback, not an Event: nothing per idle connection).
    on_close: Callable[[], None] | None = None
    # A list and a future made only while the writer waits: an empty deque or an Event
    # costs ~760 bytes each, which 10,000 idle connections would pay for nothing.
    _outbox: list[str] = field(default_factory=list)
    _waiter: asyncio.Future[None] | None = None
    _queued_bytes: int = 0
    # True once the outbox overflowed: the close must go out ahead of the backlog.
    overflowed: bool = False

    def send(self, text: str) -> None:
        """Queue a frame; never blocks. Overflow closes the connection instead."""
        if self.closing is not None:
            return
        size = self._queued_bytes + len(text)
        if len(self._outbox) >= self.max_outbox or (
            self.max_outbox_bytes and size > self.max_outbox_bytes and self._outbox
        ):
            # (One frame larger than the byte bound alone still goes out: the bound is
            # on a backlog, and every frame is already bounded by its own limits.)
            self._outbox.clear()
            self._queued_bytes = 0
            self.overflowed = True
            self.close(CloseCode.TRY_AGAIN_LATER, "client too slow: outbox full")
            self.on_overflow(self)
            return
        self._outbox.append(text)
        self._queued_bytes = size
        self._wake()

    def close(self, code: int, reason: str) -> None:
        """Ask the writer to close the socket once what is queued before now is sent."""
        if self.closing is None:
            self.closing = (code, reason)
            if self.on_close is not None:
                self.on_close()
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait_ready(self) -> None:
        """Wait until a frame is queued or a close is requested."""
        while not self._outbox and self.closing is None:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def take(self, max_bytes: int = 0) -> tuple[list[str], tuple[int, str] | None]:
        """The queued frames (at most ``max_bytes`` of them, but at least one, when
        given), and the close request once nothing is left before it."""
        outbox = self._outbox
        if not max_bytes or self._queued_bytes <= max_bytes:
            batch, self._outbox, self._queued_bytes = outbox, [], 0
            return batch, self.closing
        total = count = 0
        for text in outbox:
            if count and total + len(text) > max_bytes:
                break
            total += len(text)
            count += 1
        batch = outbox[:count]
        del outbox[:count]
        self._queued_bytes -= total
        return batch, None

    async def next_batch(self) -> tuple[list[str], tuple[int, str] | None]:
        """Wait for frames; returns all queued frames, and the close request if any."""
        await self.wait_ready()
        return self.take()

    @property
    def queued(self) -> int:
        return len(self._outbox)
