"""The bus: pub/sub between the nodes of a deployment.

The hub publishes every room event to the room's channel and subscribes a node to a
channel while it has at least one local member in that room. ``MemoryBus`` serves a
single node; ``RedisBus`` connects nodes through Redis pub/sub.

Delivery is at most once: a message published while a subscriber is disconnected
from the broker is lost for that subscriber, which learns of it through ``on_gap``
once its subscription is restored, and catches up from the database. Messages
published from one node to one channel are delivered in publish order; messages
from different nodes may interleave in any order (the hub reorders by ``seq``).
A node receives its own publications on channels it is subscribed to.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

MessageHandler = Callable[[str, bytes], None]
"""``(channel, data)``; synchronous, called in publish order per channel, must not block."""

GapHandler = Callable[[frozenset[str]], Awaitable[None]]
"""Called after every restored connection, with the channels whose subscription was
lost and restored (messages may have been missed); possibly none."""

LostHandler = Callable[[], None]
"""The connection to the broker was lost; ``healthy`` is False until ``on_gap`` comes."""


class Bus(Protocol):
    on_lost: LostHandler | None
    """Set by the user of the bus; synchronous, must not block."""

    async def start(self) -> None:
        """Connects; raises ``Unavailable`` when the broker cannot be reached."""

    async def close(self) -> None:
        """Disconnects; nothing is delivered afterwards."""

    async def publish(self, channel: str, data: bytes) -> None:
        """Sends ``data`` to the subscribers of ``channel``; ``Unavailable`` in an outage."""

    async def subscribe(self, channel: str) -> None:
        """Idempotent. Once it returns, messages published to ``channel`` are delivered."""

    async def unsubscribe(self, channel: str) -> None:
        """Idempotent. Once it returns, nothing more from ``channel`` is delivered."""

    @property
    def healthy(self) -> bool:
        """False while the connection to the broker is lost."""
