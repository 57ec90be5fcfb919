"""Publishes batched per channel and event-loop turn: one PUBLISH, order kept, failures
handled by the hub as before (issue 19)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
import pytest

from errors import Unavailable
from realtime import keys
from realtime.bus_batch import MAX_BATCH_MESSAGES, PublishBatcher, join, split
from realtime.bus_redis import RedisBus
from realtime.connection import Connection
from realtime.hub import Hub
from realtime.keys import Keys
from realtime.presence_memory import MemoryPresence
from realtime.stream_log_memory import MemoryStreamLog
from server.metrics import Metrics
from tests.realtime.test_bus import Inbox

ROOM = keys.room_channel("room-1")
OTHER = keys.room_channel("room-2")


class Sends:
    """A ``send`` that records each batch; fails while ``failing`` is set."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[str, bytes]]] = []
        self.failing = False

    async def __call__(self, items: Sequence[tuple[str, bytes]]) -> None:
        await asyncio.sleep(0)  # a send takes a while: publishes meanwhile queue up
        if self.failing:
            raise Unavailable("redis is unavailable (bus publish)")
        self.batches.append(list(items))


def test_join_and_split_round_trip() -> None:
    messages = [b'{"k":"typing"}\nx', b"", b"\x00odd", b"{}\n" + b"y" * 70_000]
    assert split(join(messages)) == messages
    assert join([b"one"]) == b"one"  # a message on its own travels as it is
    assert split(b"one") == [b"one"]


async def test_one_turn_of_publishes_goes_out_as_one_message_per_channel_in_order() -> None:
    sends = Sends()
    batcher = PublishBatcher(sends)
    await asyncio.gather(*(batcher.publish(ROOM if n % 3 else OTHER, b"%d" % n) for n in range(9)))
    assert len(sends.batches) == 1
    (batch,) = sends.batches
    assert [channel for channel, _ in batch] == [OTHER, ROOM]
    assert split(batch[0][1]) == [b"0", b"3", b"6"]
    assert split(batch[1][1]) == [b"1", b"2", b"4", b"5", b"7", b"8"]
    assert (batcher.sent_messages, batcher.sent_envelopes) == (2, 9)


async def test_publishes_made_while_a_batch_is_in_flight_go_in_the_next_in_order() -> None:
    sends = Sends()
    batcher = PublishBatcher(sends)
    first = asyncio.ensure_future(batcher.publish(ROOM, b"1"))
    await asyncio.sleep(0)  # the first batch is being sent
    await asyncio.gather(first, batcher.publish(ROOM, b"2"), batcher.publish(ROOM, b"3"))
    assert [split(data) for batch in sends.batches for _, data in batch] == [
        [b"1"],
        [b"2", b"3"],
    ]


async def test_a_large_turn_is_cut_into_bounded_messages() -> None:
    sends = Sends()
    batcher = PublishBatcher(sends)
    total = MAX_BATCH_MESSAGES + 5
    await asyncio.gather(*(batcher.publish(ROOM, b"%d" % n) for n in range(total)))
    (batch,) = sends.batches
    assert [len(split(data)) for _, data in batch] == [MAX_BATCH_MESSAGES, 5]
    assert [m for _, data in batch for m in split(data)] == [b"%d" % n for n in range(total)]


async def test_a_failed_batch_fails_each_of_its_publishers() -> None:
    sends = Sends()
    sends.failing = True
    batcher = PublishBatcher(sends)
    results = await asyncio.gather(
        *(batcher.publish(ROOM, b"%d" % n) for n in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, Unavailable) for r in results)
    sends.failing = False
    await batcher.publish(ROOM, b"again")  # the next turn goes through
    assert sends.batches == [[(ROOM, b"again")]]


async def test_closing_fails_what_waits() -> None:
    batcher = PublishBatcher(Sends())
    waiting = asyncio.ensure_future(batcher.publish(ROOM, b"1"))
    await batcher.close()
    with pytest.raises(Unavailable):
        await waiting
    with pytest.raises(Unavailable):
        await batcher.publish(ROOM, b"late")


# On Redis


@pytest.fixture
async def redis_nodes(redis_url: str, prefix: str) -> AsyncIterator[list[tuple[RedisBus, Inbox]]]:
    nodes = []
    for _ in range(2):
        inbox = Inbox()
        node = RedisBus(redis_url, inbox, inbox.on_gap, prefix=prefix)
        await node.start()
        await node.subscribe(ROOM)
        nodes.append((node, inbox))
    yield nodes
    for node, _ in nodes:
        await node.close()


async def test_a_turn_of_publishes_is_one_redis_publish_and_arrives_in_order(
    redis_nodes: list[tuple[RedisBus, Inbox]],
) -> None:
    (node_a, _), (_, inbox_b) = redis_nodes
    await asyncio.gather(*(node_a.publish(ROOM, b"%d" % n) for n in range(100)))
    received = await inbox_b.wait_for(100)
    assert received == [(ROOM, b"%d" % n) for n in range(100)]
    assert node_a.publish_counts == (1, 100)


# Through the hub


async def _no_messages(session_id: str, after: int, limit: int) -> list[dict[str, Any]]:
    return []


async def test_a_failed_batch_goes_through_the_hubs_local_delivery_and_resync(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = Hub(
        bus_factory=lambda on_message, on_gap: RedisBus(
            redis_url, on_message, on_gap, prefix=prefix
        ),
        presence=MemoryPresence(),
        stream_log=MemoryStreamLog(60),
        fetch_messages_after=_no_messages,
        metrics=Metrics(),
        keys=Keys(prefix),
    )
    await hub.start()
    try:
        conn = Connection("c1", "u1", "Ada", "user", None, 1000, lambda _: None)
        hub.register(conn)
        await hub.begin_join(conn, "s1", presence=False)
        hub.finish_join(conn, "s1", 0)
        bus = hub.bus
        assert isinstance(bus, RedisBus)
        pipeline = bus._batcher
        real_execute = pipeline.execute
        calls = 0

        async def fail_once(*commands: Any) -> list[Any]:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise Unavailable("redis is unavailable (bus publish)")
            return await real_execute(*commands)

        monkeypatch.setattr(pipeline, "execute", fail_once)
        await asyncio.gather(
            *(hub.publish_message("s1", {"seq": seq, "text": str(seq)}) for seq in (1, 2, 3))
        )
        # Delivered here at once, in order, and the bus said degraded.
        frames = [orjson.loads(text) for text in conn.take()[0]]
        assert [f["type"] for f in frames] == ["bus", "message", "message", "message"]
        assert frames[0]["status"] == "degraded"
        assert [f["message"]["seq"] for f in frames[1:]] == [1, 2, 3]
        # The existing retry path: a resync notice goes out, then "restored".
        async with asyncio.timeout(10):
            await conn.wait_ready()
        (restored,) = [orjson.loads(text) for text in conn.take()[0]]
        assert restored == {"type": "bus", "status": "restored"}
        assert calls >= 2
    finally:
        await hub.close()
