"""The Redis bus on a Redis of the test's own: idle, paused, killed and restarted.

redis-py 8 gives every connection a 5 s socket timeout unless told otherwise; a
subscriber read that inherits it drops a quiet connection every 5 s and throws away
whatever was buffered when the node was paused for longer.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable

import pytest
import redis

from realtime import keys
from realtime.bus_redis import RedisBus
from realtime.keys import Keys
from tests.private_redis import PrivateRedis
from tests.realtime.test_bus import Inbox

pytestmark = pytest.mark.slow

ROOM = keys.room_channel("room-1")
PAST_DRIVER_TIMEOUT_S = 6.5  # redis-py 8's default socket timeout is 5 s


@pytest.fixture
async def make_bus(private_redis: PrivateRedis) -> AsyncIterator[Callable[[Inbox], RedisBus]]:
    buses: list[RedisBus] = []

    def make(inbox: Inbox) -> RedisBus:
        bus = RedisBus(private_redis.url, inbox, inbox.on_gap, prefix="faults")
        buses.append(bus)
        return bus

    yield make
    for bus in buses:
        await bus.close()


async def bus_client_ages(server: PrivateRedis) -> list[int]:
    """Seconds each bus subscriber connection has been open, from ``CLIENT LIST``."""
    client = redis.asyncio.Redis.from_url(server.url, decode_responses=True)
    try:
        listed = await client.client_list()
    finally:
        await client.aclose()
    return [int(c["age"]) for c in listed if c["name"] == "faults-bus"]


async def test_an_idle_subscribed_bus_keeps_its_one_connection(
    make_bus, private_redis: PrivateRedis
) -> None:
    inbox = Inbox()
    bus = make_bus(inbox)
    await bus.start()
    await bus.subscribe(ROOM)
    first_id = bus.connection_id

    # Quiet on purpose: the property under test is that nothing happens meanwhile.
    await asyncio.sleep(PAST_DRIVER_TIMEOUT_S)

    assert bus.connection_id == first_id
    assert bus.reconnects == 0
    assert inbox.gaps == []
    ages = await bus_client_ages(private_redis)
    assert len(ages) == 1 and ages[0] >= 6, ages


async def test_a_node_paused_past_the_driver_timeout_delivers_its_backlog(
    make_bus, private_redis: PrivateRedis
) -> None:
    inbox = Inbox()
    bus = make_bus(inbox)
    await bus.start()
    await bus.subscribe(ROOM)
    first_id = bus.connection_id
    wire = Keys("faults").rebase(ROOM)

    def publish_while_paused() -> None:
        client = redis.Redis.from_url(private_redis.url)
        try:
            for n in range(50):
                client.publish(wire, b"%d" % n)
        finally:
            client.close()

    publisher = threading.Thread(target=publish_while_paused)
    publisher.start()
    # The event loop stands still, as it would in a SIGSTOPped node or a long GC pause:
    # the messages wait in the socket's buffer.
    time.sleep(PAST_DRIVER_TIMEOUT_S)  # noqa: ASYNC251
    publisher.join()

    assert [d for _, d in await inbox.wait_for(50)] == [b"%d" % n for n in range(50)]
    assert inbox.gaps == []
    assert bus.connection_id == first_id


async def test_a_redis_paused_past_the_driver_timeout_costs_no_resubscription(
    make_bus, private_redis: PrivateRedis
) -> None:
    inbox_a, inbox_b = Inbox(), Inbox()
    node_a, node_b = make_bus(inbox_a), make_bus(inbox_b)
    await node_a.start()
    await node_b.start()
    await node_a.subscribe(ROOM)
    first_id = node_a.connection_id

    private_redis.pause()
    try:
        await asyncio.sleep(PAST_DRIVER_TIMEOUT_S)
    finally:
        private_redis.resume()
    await node_b.publish(ROOM, b"after the pause")

    assert await inbox_a.wait_for(1) == [(ROOM, b"after the pause")]
    assert inbox_a.gaps == []
    assert node_a.connection_id == first_id
    assert node_a.reconnects == 0


async def test_after_a_redis_restart_the_first_publish_goes_through(
    make_bus, private_redis: PrivateRedis
) -> None:
    # redis-py 8 skips its check of a pooled connection's state when "maintenance
    # notifications" are on (its default): the first command after a restart went out
    # on the dead connection and failed, so each restart cost one lost publish.
    inbox = Inbox()
    bus = make_bus(inbox)
    await bus.start()
    await bus.subscribe(ROOM)
    await bus.publish(ROOM, b"before")  # the publisher's pool now holds a connection
    await inbox.wait_for(1)

    private_redis.stop()
    await private_redis.start()
    await asyncio.wait_for(inbox.gap_seen.wait(), 15)  # the subscriber is back

    await bus.publish(ROOM, b"after")
    assert [d for _, d in await inbox.wait_for(2)] == [b"before", b"after"]
