"""The stream log, on both implementations; time passes on a fake clock or for real."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
from redis.asyncio import Redis

from realtime.keys import Keys
from realtime.stream_log import StreamLog, StreamSnapshot, StreamTakenOver
from realtime.stream_log_memory import MemoryStreamLog
from realtime.stream_log_redis import RedisStreamLog

TTL_S = 0.5
START = {"type": "stream.start", "session_id": "s1", "stream_id": "st1", "model": "m"}
END = {"type": "stream.end", "session_id": "s1", "stream_id": "st1", "finish_reason": "stop"}


@dataclass
class Setup:
    make: Callable[[], StreamLog]  # another handle on the same storage (another node)
    advance: Callable[[float], Awaitable[None]]  # lets time pass


@pytest.fixture(params=["memory", "redis"])
def setup(request: pytest.FixtureRequest) -> Setup:
    if request.param == "memory":
        now = [0.0]
        shared = MemoryStreamLog(TTL_S, clock=lambda: now[0])

        async def tick(seconds: float) -> None:
            now[0] += seconds

        return Setup(lambda: shared, tick)
    redis_url = request.getfixturevalue("redis_url")
    prefix = request.getfixturevalue("prefix")
    return Setup(lambda: RedisStreamLog(redis_url, TTL_S, prefix=prefix), asyncio.sleep)


@pytest.fixture
async def log(setup: Setup) -> AsyncIterator[StreamLog]:
    impl = setup.make()
    yield impl
    await impl.close()


async def write(
    log: StreamLog, texts: list[str], stream_id: str = "st1", session: str = "s1"
) -> None:
    await log.open(stream_id, session, {**START, "stream_id": stream_id, "session_id": session})
    for index, text in enumerate(texts):
        await log.append(stream_id, index, text)


async def test_reading_from_an_offset_returns_the_deltas_from_that_index_on(log: StreamLog) -> None:
    await write(log, ["Hel", "lo", " wor", "ld"])
    assert await log.read("st1", 2) == StreamSnapshot(
        "st1", "s1", [(2, " wor"), (3, "ld")], None, START
    )
    snapshot = await log.read("st1", 0)
    assert snapshot is not None
    assert "".join(text for _, text in snapshot.deltas) == "Hello world"
    assert snapshot.next_offset == 4


async def test_reading_past_the_last_delta_returns_none_of_them(log: StreamLog) -> None:
    await write(log, ["a", "b"])
    snapshot = await log.read("st1", 5)
    assert snapshot is not None
    assert snapshot.deltas == []
    assert snapshot.next_offset is None


async def test_an_unknown_stream_reads_as_none_and_ignores_appends(log: StreamLog) -> None:
    await log.append("nope", 0, "x")
    assert await log.read("nope", 0) is None


async def test_deltas_must_be_appended_in_index_order(log: StreamLog) -> None:
    await write(log, ["a"])
    with pytest.raises(ValueError, match="delta 2 appended where 1 was due"):
        await log.append("st1", 2, "c")
    await log.append("st1", 1, "b")
    snapshot = await log.read("st1", 0)
    assert snapshot is not None and snapshot.deltas == [(0, "a"), (1, "b")]


async def test_a_finished_stream_keeps_its_end_and_leaves_the_running_list(
    log: StreamLog,
) -> None:
    await write(log, ["a", "b"])
    assert await log.running("s1") == [("st1", 2)]
    await log.finish("st1", END)
    assert await log.read("st1", 1) == StreamSnapshot("st1", "s1", [(1, "b")], END, START)
    assert await log.running("s1") == []


async def test_running_lists_the_sessions_unfinished_streams_with_their_offsets(
    log: StreamLog,
) -> None:
    await write(log, ["a", "b", "c"], "st1")
    await write(log, [], "st2")
    await write(log, ["x"], "st3", session="s2")
    await write(log, ["done"], "st4")
    await log.finish("st4", END)
    assert sorted(await log.running("s1")) == [("st1", 3), ("st2", 0)]
    assert await log.running("s2") == [("st3", 1)]
    assert await log.running("s3") == []


async def test_a_finished_stream_is_gone_after_the_ttl(setup: Setup, log: StreamLog) -> None:
    await write(log, ["a"])
    await log.finish("st1", END)
    await setup.advance(TTL_S * 1.2)
    assert await log.read("st1", 0) is None


async def test_a_stream_whose_writer_died_drops_out_after_the_ttl(
    setup: Setup, log: StreamLog
) -> None:
    await write(log, ["a"])
    await setup.advance(TTL_S * 1.2)
    assert await log.running("s1") == []
    assert await log.read("st1", 0) is None


async def test_writing_renews_the_ttl(setup: Setup, log: StreamLog) -> None:
    await write(log, ["a"])
    for index in range(1, 4):
        await setup.advance(TTL_S * 0.4)
        await log.append("st1", index, "x")
    await setup.advance(TTL_S * 0.4)
    assert await log.running("s1") == [("st1", 4)]


async def test_another_node_reads_and_lists_what_one_node_writes(
    setup: Setup, log: StreamLog
) -> None:
    other = setup.make()
    try:
        await write(log, ["a", "b"])
        assert await other.running("s1") == [("st1", 2)]
        await other.finish("st1", END)
        assert await log.read("st1", 0) == StreamSnapshot(
            "st1", "s1", [(0, "a"), (1, "b")], END, START
        )
    finally:
        if other is not log:
            await other.close()


async def test_concurrent_streams_appending_together_keep_their_order(log: StreamLog) -> None:
    streams = [f"st{n}" for n in range(10)]
    for stream_id in streams:
        await log.open(stream_id, "s1", START)

    async def generate(stream_id: str) -> None:
        for index in range(50):
            await log.append(stream_id, index, f"{stream_id}.{index} ")

    await asyncio.gather(*(generate(stream_id) for stream_id in streams))
    for stream_id in streams:
        snapshot = await log.read(stream_id, 0)
        assert snapshot is not None
        assert snapshot.deltas == [(i, f"{stream_id}.{i} ") for i in range(50)]


async def test_a_redis_log_that_lost_its_deltas_is_rebuilt_whole_by_its_writer(
    redis_url: str, prefix: str, admin: Redis
) -> None:
    keys = Keys(prefix)
    log = RedisStreamLog(redis_url, 60, prefix=prefix, node_id="writer")
    try:
        await write(log, ["a", "b"])
        # As if Redis had restarted empty: the deltas and the meta are gone.
        await admin.delete(keys.stream_deltas("st1"), keys.stream_meta("st1"))
        await log.append("st1", 2, "c")
        await log.append("st1", 3, "d")

        snapshot = await log.read("st1", 0)
        assert snapshot is not None
        assert snapshot.deltas == [(0, "a"), (1, "b"), (2, "c"), (3, "d")]
        assert await admin.pttl(keys.stream_deltas("st1")) > 0
        assert ("st1", 4) in await log.running("s1")
        await log.finish("st1", END)
        finished = await log.read("st1", 2)
        assert finished is not None and finished.deltas == [(2, "c"), (3, "d")]
    finally:
        await log.close()


async def test_only_the_first_to_settle_a_stream_stores_its_answer(log: StreamLog) -> None:
    await write(log, ["a"])

    assert await log.settle("st1") is True
    assert await log.settle("st1") is False


async def test_a_dead_writers_unfinished_streams_go_to_exactly_one_taker(
    redis_url: str, prefix: str
) -> None:
    writer, taker, rival = (
        RedisStreamLog(redis_url, 60, prefix=prefix, node_id=node)
        for node in ("dead", "alive", "also-alive")
    )
    try:
        await write(writer, ["a", "b"], "st1")
        await write(writer, ["c"], "st2")
        await writer.finish("st2", END)  # ended: nothing to take over
        await write(writer, ["d"], "st3")
        assert await writer.settle("st3")  # it died storing this one: taken too
        await write(taker, ["e"], "st4")  # the living node's own stream

        first, second = await asyncio.gather(
            taker.claim_orphans("dead"), rival.claim_orphans("dead")
        )

        claimed = sorted(first + second, key=lambda snapshot: snapshot.stream_id)
        assert claimed == [
            StreamSnapshot("st1", "s1", [(0, "a"), (1, "b")], None, {**START, "stream_id": "st1"}),
            StreamSnapshot("st3", "s1", [(0, "d")], None, {**START, "stream_id": "st3"}),
        ]
        # Were the writer only paused, it would find the stream taken at its end.
        assert await writer.settle("st1") is False
        assert await taker.claim_orphans("dead") == []
        assert [s.stream_id for s in await rival.claim_orphans("alive")] == ["st4"]
    finally:
        for log in (writer, taker, rival):
            await log.close()


async def test_a_writer_taken_for_dead_learns_it_at_its_next_append(
    redis_url: str, prefix: str
) -> None:
    paused, taker = (
        RedisStreamLog(redis_url, 60, prefix=prefix, node_id=node) for node in ("paused", "alive")
    )
    try:
        await write(paused, ["a"], "st1")
        await taker.claim_orphans("paused")

        with pytest.raises(StreamTakenOver):
            await paused.append("st1", 1, "b")
        await paused.append("st1", 2, "c")  # forgotten since: records nothing
        snapshot = await taker.read("st1", 0)
        assert snapshot is not None and snapshot.deltas == [(0, "a")]

        # A writer's own settle does not stop the appends of its last flush.
        await write(paused, ["x"], "st2")
        assert await paused.settle("st2")
        await paused.append("st2", 1, "y")
        snapshot = await paused.read("st2", 0)
        assert snapshot is not None and snapshot.deltas == [(0, "x"), (1, "y")]
    finally:
        for log in (paused, taker):
            await log.close()


async def test_a_writers_appends_sent_while_it_settles_its_own_stream_are_kept(
    redis_url: str, prefix: str
) -> None:
    # The writer's last frame may still be on its way to Redis when it settles the
    # stream to store its answer: that append is its own, not a sign of a takeover.
    writer = RedisStreamLog(redis_url, 60, prefix=prefix, node_id="writer")
    try:
        await write(writer, ["x"], "st1")
        settled, _ = await asyncio.gather(writer.settle("st1"), writer.append("st1", 1, "y"))
        assert settled is True
        await writer.append("st1", 2, "z")
        snapshot = await writer.read("st1", 0)
        assert snapshot is not None and snapshot.deltas == [(0, "x"), (1, "y"), (2, "z")]
    finally:
        await writer.close()


async def test_a_taken_stream_whose_log_broke_comes_without_its_text(
    redis_url: str, prefix: str
) -> None:
    dead, taker = (
        RedisStreamLog(redis_url, 60, prefix=prefix, node_id=node) for node in ("dead", "alive")
    )
    try:
        await write(dead, ["a", "b"], "st1")
        redis = Redis.from_url(redis_url, decode_responses=True)
        await redis.hset(Keys(prefix).stream_meta("st1"), "broken", 1)
        await redis.aclose()

        (claimed,) = await taker.claim_orphans("dead")
        assert claimed.stream_id == "st1" and claimed.deltas == [] and claimed.start is not None
    finally:
        for log in (dead, taker):
            await log.close()
