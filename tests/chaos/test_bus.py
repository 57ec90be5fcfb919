"""Redis faults under a live room on two nodes (faults 2, 3, 4 and 10 of issue 14)."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as redis

from tests.chaos.conftest import MakeWorld
from tests.chaos.harness import (
    Member,
    assert_acked_once_in_order,
    assert_answers_stored,
    assert_no_tracebacks,
    assert_streams_whole,
)
from tests.fakes.openrouter import Stream
from tests.wsclient import WSClient

pytestmark = [pytest.mark.slow, pytest.mark.chaos, pytest.mark.timeout(180)]

# Longer than redis-py's default 5 s socket timeout, the fault's threshold.
PAUSE_S = 7.0


async def subscriber_ages(url: str) -> list[int]:
    """How long (s) each Redis connection holding a subscription has been connected."""
    client = redis.Redis.from_url(url)
    try:
        clients = await client.client_list()
    finally:
        await client.aclose()
    return [
        int(c["age"])
        for c in clients
        if int(c.get("sub", 0)) + int(c.get("psub", 0)) + int(c.get("ssub", 0)) > 0
    ]


async def test_idle_nodes_keep_their_subscriptions(world: MakeWorld) -> None:
    # Fault 2: with redis-py's default 5 s socket timeout an idle node's subscriber read
    # timed out, and the node resubscribed every 5 s.
    w = await world(n_nodes=2, members=2)
    assert len(await subscriber_ages(w.redis.url)) >= 2
    await asyncio.sleep(PAUSE_S + 1)  # nothing happens: that is the test
    ages = await subscriber_ages(w.redis.url)
    assert ages and min(ages) >= PAUSE_S, ages
    acked = [await w.members[0].say("still there")]
    await w.members[1].message(acked[0]["message"]["id"])
    assert_no_tracebacks(*w.nodes)


async def test_a_redis_pause_longer_than_the_socket_timeout_loses_nothing(
    world: MakeWorld,
) -> None:
    # Fault 2: a Redis pause over 5 s threw away what was sent meanwhile.
    w = await world(n_nodes=2, members=4)
    sender = w.members[0]
    acks = [await sender.say("before")]
    w.redis.pause()
    try:
        during = asyncio.gather(*(sender.say(f"during {i}", timeout=30) for i in range(3)))
        await asyncio.sleep(PAUSE_S)  # the fault's length
    finally:
        w.redis.resume()
    acks += await during
    acks.append(await w.members[1].say("after", timeout=15))
    for member in w.members:
        for ack in acks:
            assert ack["type"] == "ack", ack
            await member.message(ack["message"]["id"], timeout=15)
    assert_acked_once_in_order(w.members, acks)
    assert_no_tracebacks(*w.nodes)


async def test_a_join_while_redis_is_down_is_refused_or_whole_never_half(
    world: MakeWorld,
) -> None:
    # Fault 3: a join that failed half way (Redis down) left the connection in the room
    # locally but not on the bus: it heard its own node and nothing else, for good.
    w = await world(n_nodes=2, members=2)
    user, node_b = w.users[1], w.nodes[1]
    w.redis.stop()
    ws, _ = await WSClient.connect(node_b.ws_url, user.access_token)
    try:
        reply = await ws.request({"type": "join", "session_id": w.session_id}, timeout=15)
        if reply["type"] == "error":
            assert reply["code"] == "unavailable", reply
        else:
            assert reply["type"] == "joined", reply
        await w.redis.start()
        if reply["type"] == "error":
            for _ in range(50):
                reply = await ws.request({"type": "join", "session_id": w.session_id}, timeout=15)
                if reply["type"] == "joined":
                    break
                assert reply["code"] == "unavailable", reply
                await asyncio.sleep(0.3)
        assert reply["type"] == "joined", reply
        probe = Member(user, node_b, w.session_id, ws)
        # From the other node, and from its own: both must arrive, once, in order.
        acks = [await w.members[0].say("from a"), await w.members[1].say("from b")]
        acks.append(await w.members[0].say("from a again"))
        for ack in acks:
            await probe.message(ack["message"]["id"], timeout=15)
        assert_acked_once_in_order([probe, *w.members], acks)
    finally:
        await ws.close()
    assert_no_tracebacks(*w.nodes)


async def test_the_first_message_after_a_redis_restart_reaches_every_node(
    world: MakeWorld,
) -> None:
    # Fault 4: after a Redis restart the nodes reconnect unevenly; a message sent through
    # a node still in its reconnect backoff reached only its own members until the next
    # message came along. Here nothing comes along: each message must arrive by itself.
    w = await world(n_nodes=2, members=4)
    acks = [await w.members[0].say("before")]
    w.redis.stop()
    acks.append(await w.members[1].say("while down", timeout=20))
    await w.redis.start()
    acks.append(await w.members[0].say("first after, through a", timeout=20))
    for member in w.members:
        await member.message(acks[-1]["message"]["id"], timeout=15)
    acks.append(await w.members[1].say("first after, through b", timeout=20))
    for member in w.members:
        for ack in acks:
            await member.message(ack["message"]["id"], timeout=15)
    assert_acked_once_in_order(w.members, acks)
    assert_no_tracebacks(*w.nodes)


async def test_an_answer_across_a_redis_restart_ends_once_everywhere_and_is_stored(
    world: MakeWorld,
) -> None:
    # Faults 4 and 10: the answer's node keeps generating while the bus is gone; every
    # member on the other node still gets every delta once and the one end (repaired
    # from the stream log or replayed), and the answer is stored.
    w = await world(n_nodes=2, members=4)
    w.fake.default = Stream([f"x{i} " for i in range(200)], delay_s=0.02)
    ack = await w.members[0].ask("talk through the outage")
    stream_id = ack["stream_id"]
    await w.members[1].ws.next("stream.delta", timeout=10)
    w.redis.stop()
    await asyncio.sleep(1.0)  # the outage's length
    await w.redis.start()
    for member in w.members:
        await member.end_of(stream_id, timeout=30)
    ends = assert_streams_whole(w.members, [stream_id])
    assert ends[stream_id]["finish_reason"] == "stop", ends
    await assert_answers_stored(w.nodes[1], w.owner, w.session_id, ends)
    # The members can still talk afterwards.
    after = await w.members[1].say("after")
    for member in w.members:
        await member.message(after["message"]["id"], timeout=15)
    assert_no_tracebacks(*w.nodes)


async def test_a_member_on_a_fresh_connection_after_the_outage_hears_everyone(
    world: MakeWorld,
) -> None:
    # After a Redis kill and restart, a new joiner on either node hears both nodes.
    w = await world(n_nodes=2, members=2)
    w.redis.stop()
    await w.redis.start()
    fresh = [await Member.join(w.users[i], w.nodes[1 - i], w.session_id) for i in range(2)]
    try:
        acks = [await w.members[0].say("a"), await w.members[1].say("b")]
        for member in fresh:
            for ack in acks:
                await member.message(ack["message"]["id"], timeout=15)
        assert_acked_once_in_order(fresh, acks)
    finally:
        for member in fresh:
            await member.close()


async def test_members_are_told_when_the_bus_goes_and_when_it_is_back(world: MakeWorld) -> None:
    # Fault 10: clients are told of a bus outage (docs/protocol.md, "Server notices"),
    # and the outage is an expected one: logged in a line, not a traceback.
    w = await world(n_nodes=2, members=4)
    w.redis.stop()
    for member in w.members:
        notice = await member.ws.next("bus", timeout=15)
        assert notice["status"] == "degraded", (str(member), notice)
    acks = [await w.members[0].say("while the bus is down", timeout=20)]
    await w.redis.start()
    for member in w.members:
        notice = await member.ws.next("bus", timeout=30)
        assert notice["status"] == "restored", (str(member), notice)
    acks.append(await w.members[1].say("after", timeout=20))
    for member in w.members:
        for ack in acks:
            await member.message(ack["message"]["id"], timeout=15)
    assert_acked_once_in_order(w.members, acks)
    assert_no_tracebacks(*w.nodes)
