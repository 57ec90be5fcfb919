"""Stream log in Redis: a hash and a list per stream, a set of running streams per session.

``stream:{id}:meta`` holds the session id and the start and end frames (JSON);
``stream:{id}:deltas`` is a list whose positions are the delta indices;
``session:{id}:streams`` names the streams not yet finished, and
``node:{id}:streams`` those the node is writing. Every key expires after the TTL,
renewed as the stream is written. When a node dies, the node that finds it dead
(presence's reaper) takes its streams with ``claim_orphans`` and ends them; were
that to fail, they drop out of ``running`` once their TTL has passed.

Appends are the hot path (one per coalesced frame per stream). Commands go through
a ``PipelineBatcher``, so appends of concurrent streams share round trips and reach
Redis in the order they were issued; and an append renews the TTLs only when a
quarter of the TTL has passed since they were last renewed, so it is usually one
small script: an RPUSH, unless another node has settled the stream (it took this one
for dead), which the writer learns from that append. An append that fails leaves
the positions in doubt, so the log is then marked broken and reads as unknown: the
client falls back to the stored message.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, replace
from typing import Any

import orjson

from errors import ParleyError
from realtime import _redis
from realtime.keys import DEFAULT_PREFIX, STREAM_LOG_TTL_S, Keys
from realtime.stream_log import StreamSnapshot, StreamTakenOver, check_index

# KEYS: meta. ARGV: the dead node, the claimer, the TTL in ms. 1 if claimed: nobody
# had settled the stream, or its dead writer had (it may have died storing it).
_CLAIM = """
local holder = redis.call('HGET', KEYS[1], 'settled')
if holder and holder ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'settled', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""


# KEYS: deltas, meta. ARGV: text, this node's id. The new length, or -1 without
# pushing: another node settled the stream (took this one for dead). Who settled it
# is compared in Redis, not remembered here: the writer's own settle may be on its
# way while its last appends are, and they must not take it for a stranger's.
_APPEND = """
local holder = redis.call('HGET', KEYS[2], 'settled')
if holder and holder ~= ARGV[2] then return -1 end
return redis.call('RPUSH', KEYS[1], ARGV[1])
"""


# KEYS: deltas, meta. ARGV: this node's id, the TTL in ms, then every delta's text in
# index order. Rewrites the list whole (unless another node settled the stream): the
# writer's own copy of its deltas replaces what a failed append or a Redis restart
# left. Its new length, or -1.
_REBUILD = """
local holder = redis.call('HGET', KEYS[2], 'settled')
if holder and holder ~= ARGV[1] then return -1 end
redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[2], 'broken')
local pushed = 0
for i = 3, #ARGV, 1000 do
  pushed = redis.call('RPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return pushed
"""


@dataclass(slots=True)
class _Writing:
    """What this node knows of a stream it writes."""

    session_id: str
    next_index: int
    renewed_at: float
    start_frame: dict[str, Any]
    # Every delta so far, by index: what the log is rebuilt from when it broke.
    texts: list[str]
    broken: bool = False  # an append failed: the stored deltas cannot be trusted
    flagged: bool = False  # ... and Redis has been told so


class RedisStreamLog:
    """A ``StreamLog`` shared by every node through one Redis."""

    def __init__(
        self,
        redis_url: str,
        ttl_s: float = STREAM_LOG_TTL_S,
        *,
        prefix: str = DEFAULT_PREFIX,
        node_id: str | None = None,
    ) -> None:
        """``node_id`` names the node writing, so that another can take its streams
        over if it dies; without it nothing can."""
        self._node_id = node_id
        # What this node writes as a stream's ``settled`` holder.
        self._holder = node_id or "-"
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._renew_every_s = ttl_s / 4
        self._keys = Keys(prefix)
        self._redis = _redis.connect(redis_url, decode_responses=True)
        self._batcher = _redis.PipelineBatcher(self._redis, "stream log")
        self._writing: dict[str, _Writing] = {}

    async def open(self, stream_id: str, session_id: str, start_frame: dict[str, Any]) -> None:
        meta, deltas = self._keys.stream_meta(stream_id), self._keys.stream_deltas(stream_id)
        streams = self._keys.session_streams(session_id)
        self._writing[stream_id] = _Writing(session_id, 0, time.monotonic(), start_frame, [])
        commands: list[_redis.Command] = [
            ("DEL", meta, deltas),
            ("HSET", meta, "session_id", session_id, "start", orjson.dumps(start_frame)),
            ("PEXPIRE", meta, self._ttl_ms),
            ("SADD", streams, stream_id),
            ("PEXPIRE", streams, self._ttl_ms),
        ]
        if self._node_id is not None:
            mine = self._keys.node_streams(self._node_id)
            commands += [
                ("HSET", meta, "node", self._node_id),
                ("SADD", mine, stream_id),
                ("PEXPIRE", mine, self._ttl_ms),
            ]
        await self._batcher.execute(*commands)

    async def append(self, stream_id: str, index: int, text: str) -> None:
        writing = self._writing.get(stream_id)
        if writing is None:
            # Not opened here (or already finished): only the opener appends, so
            # this is a late write; keep it harmless, as the memory log does.
            return
        check_index(stream_id, writing.next_index, index)
        writing.next_index += 1
        writing.texts.append(text)
        if writing.broken:
            await self._rebuild(stream_id, writing)
            return
        now = time.monotonic()
        deltas, meta = self._keys.stream_deltas(stream_id), self._keys.stream_meta(stream_id)
        commands: list[_redis.Command] = [("EVAL", _APPEND, 2, deltas, meta, text, self._holder)]
        # The first push creates the list: it needs its TTL at once, or a crash
        # right now would leave it behind for good.
        if index == 0 or now - writing.renewed_at >= self._renew_every_s:
            writing.renewed_at = now
            commands += self._renewals(stream_id, writing.session_id)
        try:
            replies = await self._batcher.execute(*commands)
        except ParleyError:
            # The list may or may not hold this delta now, so positions no longer
            # match indices: the log is marked unusable rather than replay wrong text.
            writing.broken = True
            raise
        if replies[0] == -1:
            del self._writing[stream_id]
            raise StreamTakenOver(stream_id)
        if replies[0] != index + 1:
            # The list lost entries under us (Redis restarted empty, or the key was
            # evicted): write it again from this node's copy.
            writing.broken = True
            await self._rebuild(stream_id, writing)

    async def _rebuild(self, stream_id: str, writing: _Writing) -> None:
        """The log again, whole, from the writer's copy: after a failed append or a
        Redis restart, members' gaps are then filled from it instead of left open
        (the deltas published while Redis was down reached no other node). Until it
        succeeds the log stays marked broken and reads as unknown."""
        deltas, meta = self._keys.stream_deltas(stream_id), self._keys.stream_meta(stream_id)
        rebuild = ("EVAL", _REBUILD, 2, deltas, meta, self._holder, self._ttl_ms, *writing.texts)
        start = orjson.dumps(writing.start_frame)
        commands: list[_redis.Command] = [
            # A restarted Redis lost the meta too: it names the session and the start.
            ("HSET", meta, "session_id", writing.session_id, "start", start),
            rebuild,
            ("SADD", self._keys.session_streams(writing.session_id), stream_id),
            *self._renewals(stream_id, writing.session_id),
        ]
        if self._node_id is not None:
            commands += [
                ("HSET", meta, "node", self._node_id),
                ("SADD", self._keys.node_streams(self._node_id), stream_id),
            ]
        try:
            replies = await self._batcher.execute(*commands)
        except ParleyError:
            await self._flag_broken(stream_id, writing)
            raise
        if replies[1] == -1:
            self._writing.pop(stream_id, None)
            raise StreamTakenOver(stream_id)
        writing.broken = writing.flagged = False
        writing.renewed_at = time.monotonic()

    async def finish(self, stream_id: str, end_frame: dict[str, Any]) -> None:
        meta = self._keys.stream_meta(stream_id)
        writing = self._writing.pop(stream_id, None)
        if writing is not None:
            session_id = writing.session_id
            if writing.broken:
                # The end frame below still lands; a log still broken reads as unknown.
                with contextlib.suppress(ParleyError, StreamTakenOver):
                    await self._rebuild(stream_id, writing)
        else:
            # Finished by a node that did not open it: look the session up.
            (session_id,) = await self._batcher.execute(("HGET", meta, "session_id"))
            if session_id is None:
                return
        commands: list[_redis.Command] = [
            ("HSET", meta, "end", orjson.dumps(end_frame)),
            *self._renewals(stream_id, session_id),
            ("SREM", self._keys.session_streams(session_id), stream_id),
        ]
        if writing is not None and self._node_id is not None:
            commands.append(("SREM", self._keys.node_streams(self._node_id), stream_id))
        await self._batcher.execute(*commands)

    async def read(self, stream_id: str, offset: int) -> StreamSnapshot | None:
        snapshot, broken = await self._snapshot(stream_id, offset)
        return None if broken else snapshot

    async def _snapshot(self, stream_id: str, offset: int) -> tuple[StreamSnapshot | None, bool]:
        """The stream from ``offset`` (None once expired), and whether its log broke."""
        start = max(0, offset)
        meta, deltas = self._keys.stream_meta(stream_id), self._keys.stream_deltas(stream_id)
        (session_id, start_frame, end_frame, broken), texts = await self._batcher.execute(
            ("HMGET", meta, "session_id", "start", "end", "broken"),
            ("LRANGE", deltas, start, -1),
        )
        if session_id is None:
            return None, False
        snapshot = StreamSnapshot(
            stream_id,
            session_id,
            [(start + i, text) for i, text in enumerate(texts)],
            orjson.loads(end_frame) if end_frame is not None else None,
            orjson.loads(start_frame) if start_frame is not None else None,
        )
        return snapshot, broken is not None

    async def running(self, session_id: str) -> list[tuple[str, int]]:
        streams = self._keys.session_streams(session_id)
        (stream_ids,) = await self._batcher.execute(("SMEMBERS", streams))
        if not stream_ids:
            return []
        ordered = sorted(stream_ids)
        commands: list[_redis.Command] = []
        for stream_id in ordered:
            commands.append(("HMGET", self._keys.stream_meta(stream_id), "session_id", "end"))
            commands.append(("LLEN", self._keys.stream_deltas(stream_id)))
        replies = await self._batcher.execute(*commands)
        found, stale = [], []
        for n, stream_id in enumerate(ordered):
            (owner, end), count = replies[2 * n], replies[2 * n + 1]
            if owner is None:  # expired: its writer is gone
                stale.append(stream_id)
            elif end is None:
                found.append((stream_id, int(count)))
        if stale:
            await self._batcher.execute(("SREM", streams, *stale))
        return found

    async def settle(self, stream_id: str) -> bool:
        meta = self._keys.stream_meta(stream_id)
        won, _ = await self._batcher.execute(
            ("HSETNX", meta, "settled", self._holder), ("PEXPIRE", meta, self._ttl_ms)
        )
        if not won:
            self._writing.pop(stream_id, None)  # another node ends it
        return bool(won)

    async def claim_orphans(self, node_id: str) -> list[StreamSnapshot]:
        theirs = self._keys.node_streams(node_id)
        # Two nodes may both read the set before either deletes it: the claim decides.
        stream_ids, _ = await self._batcher.execute(("SMEMBERS", theirs), ("DEL", theirs))
        claimed = []
        for stream_id in sorted(stream_ids):
            meta = self._keys.stream_meta(stream_id)
            claim = ("EVAL", _CLAIM, 1, meta, node_id, self._holder, self._ttl_ms)
            (won,) = await self._batcher.execute(claim)
            if not won:
                continue  # its writer got to its end, or another node took it
            snapshot, broken = await self._snapshot(stream_id, 0)
            if snapshot is not None and snapshot.end is None:
                # A broken log's text cannot be trusted: the stream ends without it.
                claimed.append(replace(snapshot, deltas=[]) if broken else snapshot)
        return claimed

    async def close(self) -> None:
        await self._batcher.close()
        await self._redis.aclose()

    async def _flag_broken(self, stream_id: str, writing: _Writing) -> None:
        if not writing.flagged:
            await self._batcher.execute(("HSET", self._keys.stream_meta(stream_id), "broken", 1))
            writing.flagged = True

    def _renewals(self, stream_id: str, session_id: str) -> list[_redis.Command]:
        renewals: list[_redis.Command] = [
            ("PEXPIRE", self._keys.stream_meta(stream_id), self._ttl_ms),
            ("PEXPIRE", self._keys.stream_deltas(stream_id), self._ttl_ms),
            ("PEXPIRE", self._keys.session_streams(session_id), self._ttl_ms),
        ]
        if self._node_id is not None:
            renewals.append(("PEXPIRE", self._keys.node_streams(self._node_id), self._ttl_ms))
        return renewals
