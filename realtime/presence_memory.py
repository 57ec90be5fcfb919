"""Single-node presence in dictionaries."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from realtime.keys import ONLINE_TTL_S
from realtime.presence import (
    Member,
    NodeGoneHandler,
    PresenceChange,
    ReapedHandler,
    sort_members,
)


class _Room:
    __slots__ = ("conns", "counts", "names")

    def __init__(self) -> None:
        self.conns: dict[str, str] = {}  # conn_id -> user_id
        self.counts: dict[str, int] = {}  # user_id -> connections
        self.names: dict[str, str] = {}  # user_id -> display name


class MemoryPresence:
    """A ``Presence`` for one process; nothing to reap, since it dies with its node."""

    def __init__(
        self,
        *,
        online_ttl_s: float = ONLINE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.on_reaped: ReapedHandler | None = None  # never called: nothing to reap
        self.on_node_gone: NodeGoneHandler | None = None  # never called: no other node
        self._rooms: dict[str, _Room] = {}
        self._online: dict[str, float] = {}  # user_id -> deadline on ``clock``
        self._online_ttl_s = online_ttl_s
        self._clock = clock

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        self._rooms.clear()
        self._online.clear()

    async def add(
        self, session_id: str, conn_id: str, user_id: str, name: str
    ) -> PresenceChange | None:
        room = self._rooms.setdefault(session_id, _Room())
        if conn_id in room.conns:
            return None
        room.conns[conn_id] = user_id
        room.names[user_id] = name
        count = room.counts.get(user_id, 0) + 1
        room.counts[user_id] = count
        return PresenceChange(session_id, user_id, name, "join") if count == 1 else None

    async def remove(self, session_id: str, conn_id: str) -> PresenceChange | None:
        room = self._rooms.get(session_id)
        if room is None:
            return None
        user_id = room.conns.pop(conn_id, None)
        if user_id is None:
            return None
        count = room.counts[user_id] - 1
        if count > 0:
            room.counts[user_id] = count
            return None
        del room.counts[user_id]
        name = room.names.pop(user_id, "")
        if not room.conns:
            del self._rooms[session_id]
        return PresenceChange(session_id, user_id, name, "leave")

    async def members(self, session_id: str) -> list[Member]:
        room = self._rooms.get(session_id)
        if room is None:
            return []
        return sort_members(
            [Member(uid, room.names.get(uid, ""), count) for uid, count in room.counts.items()]
        )

    async def occupied(self, session_ids: Sequence[str]) -> set[str]:
        return {sid for sid in session_ids if sid in self._rooms}

    async def touch_online(self, user_id: str) -> None:
        self._online[user_id] = self._clock() + self._online_ttl_s

    async def is_online(self, user_id: str) -> bool:
        deadline = self._online.get(user_id)
        if deadline is None:
            return False
        if deadline <= self._clock():
            del self._online[user_id]
            return False
        return True
