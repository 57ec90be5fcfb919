"""Every index once and the end once at every connection, around stream log faults:
deltas that never reached this node, a log read that fails, a resume racing live
frames (the soak's lost and duplicated deltas, issue 14)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from errors import Unavailable
from realtime.stream_log import StreamSnapshot
from realtime.stream_log_memory import MemoryStreamLog
from tests.realtime.test_hub_streams import SESSION, STREAM, Room, deltas, frames


@pytest.fixture
async def room() -> AsyncIterator[Room]:
    room = Room()
    await room.hub.start()
    await room.log.open(STREAM, SESSION, {"type": "stream.start", "stream_id": STREAM})
    yield room
    await room.hub.close()


async def test_a_member_gets_the_deltas_published_before_any_reached_its_node(
    room: Room,
) -> None:
    # The stream started while Redis was down: its writer's node delivered 0-4 to its
    # own members only (and rebuilt the log when Redis came back). Ada, on the other
    # node and in the room all along, first hears of it at delta 5.
    conn = await room.member()
    for index in range(5):
        await room.delta(index, f"d{index} ", log_only=True)

    await room.delta(5, "d5 ")
    await room.end(seq=1)

    seen = await frames(conn, "stream.end")
    assert deltas(seen) == [0, 1, 2, 3, 4, 5]
    assert [f["type"] for f in seen].count("stream.end") == 1


async def test_an_end_is_all_that_reached_the_node_the_member_still_gets_every_delta(
    room: Room,
) -> None:
    conn = await room.member()
    for index in range(3):
        await room.delta(index, f"d{index} ", log_only=True)
    frame = {"type": "stream.end", "session_id": SESSION, "stream_id": STREAM, "seq": 1}
    await room.log.finish(STREAM, frame)

    await room.hub.publish_stream(SESSION, STREAM, frame, index=3, end_seq=1, is_end=True)

    seen = await frames(conn, "stream.end")
    assert deltas(seen) == [0, 1, 2] and seen[-1]["type"] == "stream.end"


class FlakyLog(MemoryStreamLog):
    """Its first ``failures`` reads fail as a restarting Redis does."""

    def __init__(self, failures: int) -> None:
        super().__init__(60)
        self.failures = failures

    async def read(self, stream_id: str, offset: int) -> StreamSnapshot | None:
        if self.failures:
            self.failures -= 1
            raise Unavailable("stream log unavailable")
        return await super().read(stream_id, offset)


async def flaky_room(failures: int) -> Room:
    room = Room()
    room.log = room.hub.stream_log = FlakyLog(failures)
    await room.hub.start()
    await room.log.open(STREAM, SESSION, {"type": "stream.start", "stream_id": STREAM})
    return room


async def test_a_gap_fill_whose_first_log_read_fails_tries_again() -> None:
    room = await flaky_room(failures=2)
    try:
        conn = await room.member()
        await room.delta(0, "a ")
        await room.delta(1, "b ", log_only=True)  # its publish was lost

        await room.delta(2, "c ")
        await room.delta(3, "d ")
        await room.end(seq=1)

        seen = await frames(conn, "stream.end")
        assert deltas(seen) == [0, 1, 2, 3]
    finally:
        await room.hub.close()


async def test_a_resume_whose_first_log_read_fails_tries_again() -> None:
    room = await flaky_room(failures=1)
    try:
        for index in range(3):
            await room.delta(index, f"d{index} ", log_only=True)
        conn = await room.member(streams=(STREAM,))

        assert await room.hub.replay_stream(conn, SESSION, STREAM, 0)
        await room.delta(3, "d3 ")
        await room.end(seq=1)

        assert deltas(await frames(conn, "stream.end")) == [0, 1, 2, 3]
    finally:
        await room.hub.close()


async def test_a_resume_after_the_live_end_sends_the_missing_deltas_but_no_second_end(
    room: Room,
) -> None:
    # Ada joined mid-stream (it was listed) and got 2 live; the end came before her
    # resume (she did not resume in time).
    room.hub.streams.resume_wait_s = 0.05
    for index in range(2):
        await room.delta(index, f"d{index} ", log_only=True)
    conn = await room.member(streams=(STREAM,))
    await room.delta(2, "d2 ")
    await room.end(seq=1)
    seen = await frames(conn, "stream.end")

    assert await room.hub.replay_stream(conn, SESSION, STREAM, 0)
    await room.hub.publish_message(SESSION, {"seq": 2})  # a marker after the replay
    seen += await frames(conn, "message")

    assert sorted(deltas(seen)) == [0, 1, 2]
    assert [f["type"] for f in seen].count("stream.end") == 1


async def test_the_end_waits_for_the_resume_of_a_member_told_of_the_stream(room: Room) -> None:
    for index in range(3):
        await room.delta(index, f"d{index} ", log_only=True)
    conn = await room.member(streams=(STREAM,))
    await room.end(seq=1)  # before any live delta reached her, and before her resume

    assert await room.hub.replay_stream(conn, SESSION, STREAM, 0)

    seen = await frames(conn, "stream.end")
    assert deltas(seen) == [0, 1, 2] and seen[-1]["type"] == "stream.end"
    await room.hub.publish_message(SESSION, {"seq": 2})
    assert [f["type"] for f in await frames(conn, "message")] == ["message"]


async def test_two_replays_racing_the_live_frames_send_each_index_and_the_end_once(
    room: Room,
) -> None:
    for index in range(4):
        await room.delta(index, f"d{index} ", log_only=True)
    conn = await room.member(streams=(STREAM,))
    await room.delta(4, "d4 ")

    async def later_deltas() -> None:
        for index in range(5, 8):
            await room.delta(index, f"d{index} ")
            await asyncio.sleep(0)
        await room.end(seq=1)

    results: list[Any] = await asyncio.gather(
        room.hub.replay_stream(conn, SESSION, STREAM, 0),
        room.hub.replay_stream(conn, SESSION, STREAM, 2),
        later_deltas(),
    )
    assert results[:2] == [True, True]
    seen = await frames(conn, "stream.end")
    await room.hub.publish_message(SESSION, {"seq": 2})
    seen += await frames(conn, "message")

    assert sorted(deltas(seen)) == list(range(8))
    assert [f["type"] for f in seen].count("stream.end") == 1


async def test_live_deltas_wait_for_the_resume_of_a_member_told_of_the_stream(
    room: Room,
) -> None:
    # joined.streams listed the stream at offset 3; 3 and 4 come live before her
    # resume from 0 is read: she still gets 0-4 in order, each once.
    for index in range(3):
        await room.delta(index, f"d{index} ", log_only=True)
    conn = await room.member(streams=(STREAM,))
    await room.delta(3, "d3 ")
    await room.delta(4, "d4 ")

    assert await room.hub.replay_stream(conn, SESSION, STREAM, 0)
    await room.delta(5, "d5 ")
    await room.end(seq=1)

    assert deltas(await frames(conn, "stream.end")) == [0, 1, 2, 3, 4, 5]
