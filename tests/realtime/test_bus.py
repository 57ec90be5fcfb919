"""The bus: memory and Redis implementations, the latter as two nodes on a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from errors import Unavailable
from realtime import keys
from realtime.bus_memory import MemoryBus
from realtime.bus_redis import RedisBus

ROOM = keys.room_channel("room-1")
OTHER = keys.room_channel("room-2")


class Inbox:
    """Collects (channel, data) and wakes a waiter once enough arrived."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.gaps: list[frozenset[str]] = []
        self._want = 0
        self._enough = asyncio.Event()
        self.gap_seen = asyncio.Event()

    def __call__(self, channel: str, data: bytes) -> None:
        self.received.append((channel, data))
        if len(self.received) >= self._want:
            self._enough.set()

    async def on_gap(self, channels: frozenset[str]) -> None:
        self.gaps.append(channels)
        self.gap_seen.set()

    async def wait_for(self, count: int) -> list[tuple[str, bytes]]:
        self._want = count
        if len(self.received) < count:
            self._enough.clear()
            await asyncio.wait_for(self._enough.wait(), 10)
        return self.received

    def data(self) -> list[bytes]:
        return [data for _, data in self.received]


# Memory


async def test_memory_bus_delivers_subscribed_channels_in_publish_order() -> None:
    inbox = Inbox()
    bus = MemoryBus(inbox)
    await bus.start()
    await bus.subscribe(ROOM)
    await bus.subscribe(ROOM)
    for n in range(5):
        await bus.publish(ROOM, b"%d" % n)
    assert inbox.received == [(ROOM, b"%d" % n) for n in range(5)]
    assert bus.healthy


async def test_memory_bus_drops_messages_for_unsubscribed_channels() -> None:
    inbox = Inbox()
    bus = MemoryBus(inbox)
    await bus.start()
    await bus.subscribe(ROOM)
    await bus.publish(OTHER, b"never")
    await bus.unsubscribe(ROOM)
    await bus.unsubscribe(ROOM)
    await bus.publish(ROOM, b"gone")
    assert inbox.received == []


async def test_memory_bus_delivers_nothing_after_close() -> None:
    inbox = Inbox()
    bus = MemoryBus(inbox)
    await bus.start()
    await bus.subscribe(ROOM)
    await bus.close()
    await bus.publish(ROOM, b"late")
    assert inbox.received == []
    assert not bus.healthy


# Redis


@pytest.fixture
async def make_node(redis_url: str, prefix: str) -> AsyncIterator[Callable[..., RedisBus]]:
    """Builds started RedisBus "nodes" sharing one prefix, and closes them all."""
    nodes: list[RedisBus] = []

    def make(inbox: Inbox) -> RedisBus:
        node = RedisBus(redis_url, inbox, inbox.on_gap, prefix=prefix)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        await node.close()


async def test_two_redis_nodes_exchange_messages_in_publish_order(make_node) -> None:
    inbox_a, inbox_b = Inbox(), Inbox()
    node_a, node_b = make_node(inbox_a), make_node(inbox_b)
    await node_a.start()
    await node_b.start()
    await node_a.subscribe(ROOM)
    await node_b.subscribe(ROOM)

    # Issued together, so they travel in shared pipelines; order must survive that.
    await asyncio.gather(*(node_b.publish(ROOM, b"%d" % n) for n in range(200)))

    expected = [b"%d" % n for n in range(200)]
    assert [d for _, d in await inbox_a.wait_for(200)] == expected
    assert [d for _, d in await inbox_b.wait_for(200)] == expected
    assert {channel for channel, _ in inbox_a.received} == {ROOM}


async def test_a_redis_node_receives_nothing_from_channels_it_is_not_subscribed_to(
    make_node,
) -> None:
    inbox_a, inbox_b = Inbox(), Inbox()
    node_a, node_b = make_node(inbox_a), make_node(inbox_b)
    await node_a.start()
    await node_b.start()
    await node_a.subscribe(OTHER)
    await node_a.subscribe(ROOM)
    await node_a.unsubscribe(OTHER)
    await node_a.unsubscribe(OTHER)

    await node_b.publish(OTHER, b"not for a")
    await node_b.publish(ROOM, b"for a")

    # Same publisher, so "not for a" would have arrived first.
    assert await inbox_a.wait_for(1) == [(ROOM, b"for a")]


async def test_redis_nodes_under_other_prefixes_do_not_hear_each_other(
    make_node, redis_url: str, prefix: str
) -> None:
    inbox_a, inbox_stranger = Inbox(), Inbox()
    node_a = make_node(inbox_a)
    stranger = RedisBus(redis_url, inbox_stranger, prefix=prefix + "-other")
    await node_a.start()
    await stranger.start()
    try:
        await node_a.subscribe(ROOM)
        await stranger.subscribe(ROOM)
        await stranger.publish(ROOM, b"stranger")
        await node_a.publish(ROOM, b"own")
        assert await inbox_a.wait_for(1) == [(ROOM, b"own")]
        assert await inbox_stranger.wait_for(1) == [(ROOM, b"stranger")]
    finally:
        await stranger.close()


async def test_a_killed_subscriber_connection_resubscribes_and_reports_the_gap(
    make_node, admin: Redis
) -> None:
    inbox_a, inbox_b = Inbox(), Inbox()
    node_a, node_b = make_node(inbox_a), make_node(inbox_b)
    await node_a.start()
    await node_b.start()
    await node_a.subscribe(ROOM)
    await node_a.subscribe(OTHER)
    await node_a.unsubscribe(OTHER)
    await node_b.publish(ROOM, b"before")
    await inbox_a.wait_for(1)
    killed_id = node_a.connection_id

    assert await admin.execute_command("CLIENT", "KILL", "ID", killed_id) == 1
    await asyncio.wait_for(inbox_a.gap_seen.wait(), 10)

    assert inbox_a.gaps == [frozenset({ROOM})]
    assert node_a.healthy
    assert node_a.connection_id not in (None, killed_id)
    await node_b.publish(ROOM, b"after")
    assert [d for _, d in await inbox_a.wait_for(2)] == [b"before", b"after"]


async def test_a_redis_bus_that_cannot_reach_redis_is_unavailable() -> None:
    inbox = Inbox()
    bus = RedisBus("redis://127.0.0.1:1/0", inbox)
    with pytest.raises(Unavailable):
        await bus.start()
    assert not bus.healthy
    with pytest.raises(Unavailable):
        await bus.publish(ROOM, b"x")
    with pytest.raises(Unavailable):
        await bus.subscribe(ROOM)
    await bus.close()


async def test_a_closed_redis_bus_refuses_to_publish(make_node) -> None:
    inbox = Inbox()
    node = make_node(inbox)
    await node.start()
    await node.close()
    with pytest.raises(Unavailable):
        await node.publish(ROOM, b"x")


async def test_closing_a_redis_bus_ends_its_reader_even_when_redis_py_swallows_the_cancel(
    make_node,  # type: ignore[no-untyped-def]
) -> None:
    # Seen in a rolling restart: the reader's cancellation came back out of redis-py as
    # a read timeout, the reader took it for a lost connection and reconnected, and
    # close(), waiting for the reader, hung the node's shutdown.
    from redis.exceptions import TimeoutError as RedisTimeout

    node = make_node(Inbox())
    await node.start()
    connection = node._conn
    real_read = connection.read_response

    async def read_turning_cancel_into_timeout(*args, **kwargs):  # type: ignore[no-untyped-def]
        try:
            return await real_read(*args, **kwargs)
        except asyncio.CancelledError:
            raise RedisTimeout("Timeout reading from 127.0.0.1:6379") from None

    connection.read_response = read_turning_cancel_into_timeout
    await asyncio.sleep(0.05)  # the reader is waiting in that read

    await asyncio.wait_for(node.close(), 5)

    assert not node.healthy
