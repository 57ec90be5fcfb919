"""Each connection's view of each stream: every index once, the end once, in order.

A connection's ``StreamCursor`` records which indices it was sent and whether it was
sent the end, so an index that comes several ways (live, a gap fill from the stream
log, a ``resume``) goes out once. A connection in the room when a stream started is
owed all of it: a first live delta past 0 (the earlier ones never reached this node,
e.g. published while Redis was down) or an end naming more deltas than it got is
preceded by what the log holds. A connection told of the stream in ``joined.streams``
resumes it from where the client is, so its live frames wait briefly for that resume.
Log reads that fail or come up short (Redis restarting, a writer rebuilding its log)
are retried for a few seconds before a hole is given up on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from errors import ParleyError
from realtime.connection import Connection, StreamCursor
from realtime.envelope import Envelope
from realtime.frames import encode
from realtime.stream_log import StreamLog, StreamSnapshot

# How long a gap fill or a resume keeps trying a stream log read that failed or came
# up short (Redis restarting, a writer rebuilding its log) before giving up on it.
LOG_RETRY_S = 3.0
LOG_RETRY_FIRST_DELAY_S = 0.05
LOG_RETRY_MAX_DELAY_S = 0.5
# How long a stream's live frames wait for the resume of a client told of the stream
# in joined.streams, so that they come after what the resume brings.
RESUME_WAIT_S = 2.0
# Stream cursors a connection keeps before dropping the oldest ended ones.
MAX_CURSORS = 64


class StreamDelivery:
    def __init__(
        self,
        stream_log: Callable[[], StreamLog],
        spawn: Callable[[Awaitable[Any]], asyncio.Task[Any]],
    ) -> None:
        # A getter: the hub's log may be swapped (tests do).
        self._stream_log = stream_log
        self._spawn = spawn
        self.log_retry_s = LOG_RETRY_S
        self.resume_wait_s = RESUME_WAIT_S

    def deliver(self, conn: Connection, env: Envelope, *, fill: bool = True) -> None:
        """One live stream frame to one connection: each index once, the end once, and
        no index left out ahead of the one being sent (it is filled from the log first).
        ``fill=False`` after a log read that came up short: send what there is."""
        stream_id = env.stream_id
        assert stream_id is not None
        cursor = conn.cursors.get(stream_id)
        if cursor is not None:
            if cursor.pending is not None:
                cursor.pending.append(env)
                return
            if cursor.ended:
                return  # its end went out: nothing after it (a late live copy)
        if env.index is None and not env.stream_end:
            conn.send(env.frame)  # stream.start, stream.status
            return
        if cursor is None:
            # Not listed in this connection's joined.streams: it was in the room when
            # the stream started, so every index is owed to it, from 0, even those that
            # never reached this node (published while Redis was down).
            cursor = conn.cursors[stream_id] = StreamCursor(base=0)
        if fill and cursor.base is None:
            # The client was told of this stream in joined.streams and its resume is on
            # its way: live frames wait for it (briefly), so that the client gets every
            # index from its offset in order, and the end last.
            cursor.pending = [env]
            self._spawn(self._release_unless_resumed(conn, cursor))
            return
        if env.stream_end:
            # An end names how many deltas the stream had (``index``): a member that
            # missed some (they went out while Redis was down, or their node died
            # before publishing what it had logged) gets them from the log first.
            gap = cursor.first_missing(cursor.base or 0, env.index or 0) if fill else None
            if gap is not None:
                self._fill(conn, env.session_id, stream_id, cursor, env, gap, env.index or 0)
                return
            self._send_end(conn, cursor, env.frame)
            return
        index = env.index
        assert index is not None
        if cursor.base is None:
            cursor.base = index  # the client resumes for what came before
        if cursor.was_sent(index) or index < cursor.base:
            return
        gap = cursor.first_missing(cursor.base, index) if fill else None
        if gap is not None:
            self._fill(conn, env.session_id, stream_id, cursor, env, gap, index)
            return
        cursor.mark(index)
        conn.send(env.frame)

    def _fill(
        self,
        conn: Connection,
        session_id: str,
        stream_id: str,
        cursor: StreamCursor,
        env: Envelope,
        start: int,
        stop: int,
    ) -> None:
        """Indices ``start`` to ``stop - 1`` from the log, then ``env`` and what follows."""
        cursor.pending = [env]

        async def fill() -> None:
            complete = False
            try:
                snapshot = await self._read_log(cursor, session_id, stream_id, start, stop)
                if snapshot is not None:
                    complete = self._covers(snapshot, start, stop)
                    self._send_snapshot(conn, cursor, snapshot)
            finally:
                # A log that cannot fill the hole must not also hold back the rest of
                # the stream and its end.
                self._release_pending(conn, cursor, fill=complete)

        self._spawn(fill())

    @staticmethod
    def _covers(snapshot: StreamSnapshot, start: int, stop: int) -> bool:
        return snapshot.end is not None or (snapshot.next_offset or start) >= stop

    async def _read_log(
        self,
        cursor: StreamCursor,
        session_id: str,
        stream_id: str,
        offset: int,
        stop: int,
        *,
        raise_errors: bool = False,
    ) -> StreamSnapshot | None:
        """The log from ``offset``, holding the cursor's live frames meanwhile.

        A read that fails, or finds the log unknown or short of ``stop`` (Redis came
        back empty and the writer has not rebuilt it yet; a broken log reads as
        unknown), is tried again for ``log_retry_s`` before the hole is given up on.
        """
        cursor.readers += 1
        if cursor.pending is None:
            cursor.pending = []
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.log_retry_s
            delay = LOG_RETRY_FIRST_DELAY_S
            while True:
                error: ParleyError | None = None
                snapshot: StreamSnapshot | None = None
                try:
                    snapshot = await self._stream_log().read(stream_id, offset)
                except ParleyError as exc:
                    error = exc
                if snapshot is not None and snapshot.session_id != session_id:
                    return None
                if snapshot is not None and self._covers(snapshot, offset, stop):
                    return snapshot
                if loop.time() + delay > deadline:
                    if error is not None and raise_errors:
                        raise error
                    return snapshot
                await asyncio.sleep(delay)
                delay = min(delay * 2, LOG_RETRY_MAX_DELAY_S)
        finally:
            cursor.readers -= 1

    def _send_snapshot(
        self, conn: Connection, cursor: StreamCursor, snapshot: StreamSnapshot
    ) -> None:
        """What the log holds that this connection was not sent (from ``base`` on)."""
        base = cursor.base or 0
        for index, text in snapshot.deltas:
            if index < base or cursor.was_sent(index):
                continue
            cursor.mark(index)
            conn.send(
                encode(
                    {
                        "type": "stream.delta",
                        "session_id": snapshot.session_id,
                        "stream_id": snapshot.stream_id,
                        "index": index,
                        "text": text,
                    }
                )
            )
        if snapshot.end is not None and not cursor.ended:
            self._send_end(conn, cursor, encode(snapshot.end))

    def _release_pending(self, conn: Connection, cursor: StreamCursor, *, fill: bool) -> None:
        """Once no read of the log is in flight, the live frames that waited go on."""
        if cursor.readers or cursor.pending is None:
            return
        pending, cursor.pending = cursor.pending, None
        for env in pending:
            self.deliver(conn, env, fill=fill)

    async def _release_unless_resumed(self, conn: Connection, cursor: StreamCursor) -> None:
        await asyncio.sleep(self.resume_wait_s)
        if cursor.base is None:  # no resume came: what waited goes out as it is
            self._release_pending(conn, cursor, fill=False)

    def _send_end(self, conn: Connection, cursor: StreamCursor, frame: str) -> None:
        cursor.ended = True
        cursor.pending = None
        conn.send(frame)
        # An ended stream's cursor stays (a late resume or live copy must not bring its
        # end again), but only the latest few of them.
        if len(conn.cursors) > MAX_CURSORS:
            ended = [sid for sid, c in conn.cursors.items() if c.ended]
            for sid in ended[: max(0, len(ended) - MAX_CURSORS // 2)]:
                del conn.cursors[sid]

    async def replay(
        self,
        conn: Connection,
        session_id: str,
        stream_id: str,
        offset: int,
        before_replay: Callable[[], None] | None = None,
    ) -> bool:
        """Send the stream from ``offset`` out of the log, then continue live.

        Each index goes to a connection once: what it was sent already (live deltas
        that reached a member who joined mid-stream, before its resume) is skipped, and
        so is an end it was sent. Returns False when the log no longer holds the
        stream. ``before_replay`` runs just before the first replayed frame is queued
        (the resume ``ack``).
        """
        offset = max(0, offset)
        cursor = conn.cursors.get(stream_id)
        if cursor is None:
            cursor = conn.cursors[stream_id] = StreamCursor(base=offset)
        found = False
        try:
            snapshot = await self._read_log(
                cursor, session_id, stream_id, offset, offset, raise_errors=True
            )
            if snapshot is not None:
                found = True
                if before_replay is not None:
                    before_replay()
                # The client holds what is before ``offset``.
                cursor.base = offset
                self._send_snapshot(conn, cursor, snapshot)
        finally:
            self._release_pending(conn, cursor, fill=found)
        return found
