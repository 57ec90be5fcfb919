"""Presence: the shared behaviour on both implementations, then Redis across nodes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from errors import Unavailable
from realtime.keys import Keys
from realtime.presence import Member, Presence, PresenceChange
from realtime.presence_memory import MemoryPresence
from realtime.presence_redis import RedisPresence

ROOM, OTHER_ROOM = "room-1", "room-2"


class Reaped:
    """``on_reaped`` that records changes and wakes a waiter."""

    def __init__(self) -> None:
        self.changes: list[PresenceChange] = []
        self.seen = asyncio.Event()

    async def __call__(self, changes: list[PresenceChange]) -> None:
        self.changes.extend(changes)
        self.seen.set()


def join(user_id: str, name: str, room: str = ROOM) -> PresenceChange:
    return PresenceChange(room, user_id, name, "join")


def leave(user_id: str, name: str, room: str = ROOM) -> PresenceChange:
    return PresenceChange(room, user_id, name, "leave")


@pytest.fixture
async def make_redis_node(
    redis_url: str, prefix: str
) -> AsyncIterator[Callable[..., RedisPresence]]:
    nodes: list[RedisPresence] = []

    def make(node_id: str, on_reaped: Reaped | None = None, ttl_s: float = 30) -> RedisPresence:
        node = RedisPresence(redis_url, node_id, on_reaped or Reaped(), ttl_s=ttl_s, prefix=prefix)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        if node._tasks:  # started and neither closed nor abandoned
            await node.close()


@pytest.fixture(params=["memory", "redis"])
def presence_factory(request: pytest.FixtureRequest) -> Callable[[], Presence]:
    # Sync, so that it may pull the Redis fixtures (and their skip) only when needed.
    if request.param == "memory":
        return MemoryPresence
    make = request.getfixturevalue("make_redis_node")
    return lambda: make("node-a")


@pytest.fixture
async def presence(presence_factory: Callable[[], Presence]) -> Presence:
    impl = presence_factory()
    await impl.start()
    return impl


async def test_a_users_first_connection_joins_and_their_last_leaves(presence: Presence) -> None:
    assert await presence.add(ROOM, "c1", "u1", "Ada") == join("u1", "Ada")
    assert await presence.add(ROOM, "c2", "u1", "Ada") is None
    assert await presence.remove(ROOM, "c1") is None
    assert await presence.remove(ROOM, "c2") == leave("u1", "Ada")
    assert await presence.members(ROOM) == []


async def test_adding_or_removing_a_connection_twice_changes_nothing(presence: Presence) -> None:
    await presence.add(ROOM, "c1", "u1", "Ada")
    assert await presence.add(ROOM, "c1", "u1", "Ada") is None
    assert await presence.members(ROOM) == [Member("u1", "Ada", 1)]
    await presence.remove(ROOM, "c1")
    assert await presence.remove(ROOM, "c1") is None
    assert await presence.remove("never-seen", "c9") is None


async def test_members_counts_each_users_connections(presence: Presence) -> None:
    await presence.add(ROOM, "c1", "u2", "Bob")
    await presence.add(ROOM, "c2", "u1", "Ada")
    await presence.add(ROOM, "c3", "u1", "Ada")
    await presence.add(OTHER_ROOM, "c1", "u2", "Bob")
    assert await presence.members(ROOM) == [Member("u1", "Ada", 2), Member("u2", "Bob", 1)]
    assert await presence.members(OTHER_ROOM) == [Member("u2", "Bob", 1)]


async def test_occupied_names_the_rooms_with_anyone_present(presence: Presence) -> None:
    await presence.add(ROOM, "c1", "u1", "Ada")
    await presence.add(OTHER_ROOM, "c2", "u2", "Bob")
    await presence.remove(OTHER_ROOM, "c2")
    assert await presence.occupied([ROOM, OTHER_ROOM, "room-3"]) == {ROOM}
    assert await presence.occupied([]) == set()


async def test_a_touched_user_is_online(presence: Presence) -> None:
    assert not await presence.is_online("u1")
    await presence.touch_online("u1")
    assert await presence.is_online("u1")


async def test_memory_online_marks_expire_after_their_ttl() -> None:
    now = [100.0]
    presence = MemoryPresence(online_ttl_s=30, clock=lambda: now[0])
    await presence.touch_online("u1")
    now[0] += 29.9
    assert await presence.is_online("u1")
    now[0] += 0.2
    assert not await presence.is_online("u1")


# Redis across nodes


async def test_two_redis_nodes_share_presence_and_decide_first_and_last_together(
    make_redis_node,
) -> None:
    node_a, node_b = make_redis_node("node-a"), make_redis_node("node-b")
    await node_a.start()
    await node_b.start()

    assert await node_a.add(ROOM, "a1", "u1", "Ada") == join("u1", "Ada")
    assert await node_b.add(ROOM, "b1", "u1", "Ada") is None
    assert await node_b.members(ROOM) == [Member("u1", "Ada", 2)]
    assert await node_a.remove(ROOM, "a1") is None
    assert await node_b.remove(ROOM, "b1") == leave("u1", "Ada")
    assert await node_a.occupied([ROOM]) == set()


async def test_concurrent_first_connections_on_two_nodes_join_once(make_redis_node) -> None:
    node_a, node_b = make_redis_node("node-a"), make_redis_node("node-b")
    await node_a.start()
    await node_b.start()
    results = await asyncio.gather(
        *(
            node.add(ROOM, f"{node.node_id}-{n}", "u1", "Ada")
            for n in range(20)
            for node in (node_a, node_b)
        )
    )
    assert results.count(join("u1", "Ada")) == 1
    assert await node_a.members(ROOM) == [Member("u1", "Ada", 40)]


async def test_a_dead_nodes_users_are_reaped_by_a_live_node(make_redis_node) -> None:
    reaped = Reaped()
    node_a = make_redis_node("node-a", reaped, ttl_s=2)
    node_b = make_redis_node("node-b", ttl_s=2)
    await node_a.start()
    await node_b.start()
    await node_a.add(ROOM, "a1", "u1", "Ada")
    await node_b.add(ROOM, "b1", "u1", "Ada")
    await node_b.add(ROOM, "b2", "u2", "Bob")
    await node_b.add(OTHER_ROOM, "b2", "u2", "Bob")

    await node_b.abandon()  # SIGKILL: no cleanup, no more heartbeats
    await asyncio.wait_for(reaped.seen.wait(), 10)

    assert sorted(reaped.changes, key=lambda c: c.session_id) == [
        leave("u2", "Bob"),
        leave("u2", "Bob", OTHER_ROOM),
    ]
    assert await node_a.members(ROOM) == [Member("u1", "Ada", 1)]
    assert await node_a.occupied([ROOM, OTHER_ROOM]) == {ROOM}


async def test_a_dead_node_is_reported_gone_once_by_one_live_node(make_redis_node) -> None:
    # What the report starts (ending the dead node's streams) must happen once.
    node_a, node_b, node_c = (make_redis_node(n, ttl_s=2) for n in ("node-a", "node-b", "node-c"))
    gone: list[tuple[str, str]] = []
    for node in (node_a, node_b):

        async def report(node_id: str, by: str = node.node_id) -> None:
            gone.append((by, node_id))

        node.on_node_gone = report
        await node.start()
    await node_c.start()
    await node_c.add(ROOM, "c1", "u1", "Ada")

    await node_c.abandon()
    await asyncio.sleep(2)  # the node key lives for 2/3 of the TTL; reapers look often
    await asyncio.gather(node_a.reap_once(), node_b.reap_once(), node_a.reap_once())

    assert [node_id for _, node_id in gone] == ["node-c"]


async def test_a_live_node_is_not_reaped(make_redis_node) -> None:
    node_a, node_b = make_redis_node("node-a", ttl_s=2), make_redis_node("node-b", ttl_s=2)
    await node_a.start()
    await node_b.start()
    await node_b.add(ROOM, "b1", "u1", "Ada")
    assert await node_a.reap_once() == []
    assert await node_a.members(ROOM) == [Member("u1", "Ada", 1)]


async def test_a_node_taken_for_dead_re_registers_its_connections(
    make_redis_node, admin: Redis, prefix: str
) -> None:
    rejoined = Reaped()
    node_a = make_redis_node("node-a", ttl_s=2)
    node_b = make_redis_node("node-b", rejoined, ttl_s=2)
    await node_a.start()
    await node_b.start()
    await node_b.add(ROOM, "b1", "u1", "Ada")

    # As if node-b had paused past its TTL and been reaped meanwhile.
    await admin.delete(Keys(prefix).node("node-b"))
    assert await node_a.reap_once() == [leave("u1", "Ada")]

    await asyncio.wait_for(rejoined.seen.wait(), 10)
    assert rejoined.changes == [join("u1", "Ada")]
    assert await node_a.members(ROOM) == [Member("u1", "Ada", 1)]


async def test_closing_a_node_removes_its_entries_and_reports_the_leaves(
    make_redis_node, admin: Redis, prefix: str
) -> None:
    closed = Reaped()
    node_a, node_b = make_redis_node("node-a"), make_redis_node("node-b", closed)
    await node_a.start()
    await node_b.start()
    await node_a.add(ROOM, "a1", "u1", "Ada")
    await node_b.add(ROOM, "b1", "u1", "Ada")
    await node_b.add(ROOM, "b2", "u2", "Bob")
    await node_b.close()
    assert closed.changes == [leave("u2", "Bob")]
    assert await node_a.members(ROOM) == [Member("u1", "Ada", 1)]
    keys = Keys(prefix)
    assert not await admin.exists(keys.node("node-b"), keys.node_conns("node-b"))
    assert await admin.smembers(keys.nodes) == {b"node-a"}


async def test_a_closed_redis_node_refuses_new_entries(make_redis_node) -> None:
    node = make_redis_node("node-a")
    await node.start()
    await node.close()
    with pytest.raises(Unavailable):
        await node.add(ROOM, "a1", "u1", "Ada")


async def test_closing_redis_presence_stops_a_reaper_whose_cancel_came_back_as_an_error(
    make_redis_node: Callable[..., RedisPresence],
) -> None:
    # Seen in a rolling restart: the reaper's cancellation came back out of redis-py
    # as a Redis error, the reaper logged it and went on, and close() waited for it.
    from redis.exceptions import ConnectionError as RedisConnectionError

    node = make_redis_node("node-a", ttl_s=0.5)
    reaping = asyncio.Event()

    async def reap_turning_cancel_into_error() -> list[PresenceChange]:
        reaping.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            raise RedisConnectionError("Connection closed by server.") from None
        return []

    node.reap_once = reap_turning_cancel_into_error  # type: ignore[method-assign]
    await node.start()
    await asyncio.wait_for(reaping.wait(), 5)

    await asyncio.wait_for(node.close(), 5)

    assert not node._tasks
