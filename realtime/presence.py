"""Presence: who is in which room, across every node.

A user joins a room with their first connection in it and leaves with their last;
the hub broadcasts those changes. ``MemoryPresence`` serves a single node;
``RedisPresence`` shares presence between nodes and removes the entries of a node
that died without cleaning up.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol


@dataclass(frozen=True, slots=True)
class Member:
    user_id: str
    name: str
    connections: int


@dataclass(frozen=True, slots=True)
class PresenceChange:
    session_id: str
    user_id: str
    name: str
    state: Literal["join", "leave"]


ReapedHandler = Callable[[list[PresenceChange]], Awaitable[None]]
# Told the id of a node found dead, once, by the one node that reaped it.
NodeGoneHandler = Callable[[str], Awaitable[None]]
"""Receives changes that no ``add``/``remove`` call returned: the leaves of dead nodes'
users, and the joins of this node's users when it re-registers after being taken for
dead. The hub publishes them like any other change."""


class Presence(Protocol):
    # Both set once the hub and the assistant exist (they need this presence first).
    on_reaped: ReapedHandler | None
    on_node_gone: NodeGoneHandler | None

    async def start(self) -> None:
        """Starts background work (Redis: the node heartbeat and the dead-node reaper)."""

    async def close(self) -> None:
        """Removes this node's entries (graceful shutdown) and stops background work.

        Redis: the leaves this causes are reported through ``on_reaped``, so call it
        before closing the bus."""

    async def add(
        self, session_id: str, conn_id: str, user_id: str, name: str
    ) -> PresenceChange | None:
        """Records a connection in a room; "join" when it is the user's first there.

        Adding the same connection twice changes nothing and returns None."""

    async def remove(self, session_id: str, conn_id: str) -> PresenceChange | None:
        """Forgets a connection; "leave" when it was the user's last in the room."""

    async def members(self, session_id: str) -> list[Member]:
        """Everyone present, ordered by name then user id."""

    async def occupied(self, session_ids: Sequence[str]) -> set[str]:
        """Which of these rooms have anyone present."""

    async def touch_online(self, user_id: str) -> None:
        """Marks the user online for the online TTL."""

    async def is_online(self, user_id: str) -> bool: ...


def sort_members(members: list[Member]) -> list[Member]:
    return sorted(members, key=lambda m: (m.name, m.user_id))
