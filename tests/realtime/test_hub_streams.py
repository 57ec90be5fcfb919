"""The hub's delivery of one stream to one connection: every index once, and the end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from realtime.bus_memory import MemoryBus
from realtime.connection import Connection
from realtime.hub import Hub
from realtime.keys import Keys
from realtime.presence_memory import MemoryPresence
from realtime.stream_log_memory import MemoryStreamLog
from server.metrics import Metrics

SESSION = "s1"
STREAM = "st1"


class Room:
    """A hub on the memory bus with one session; ``stored`` is its database."""

    def __init__(self) -> None:
        self.stored: list[dict[str, Any]] = []
        self.log = MemoryStreamLog(60)
        self.hub = Hub(
            bus_factory=MemoryBus,
            presence=MemoryPresence(),
            stream_log=self.log,
            fetch_messages_after=self._fetch_after,
            metrics=Metrics(),
            keys=Keys("test"),
        )

    async def _fetch_after(self, session_id: str, after: int, limit: int) -> list[dict[str, Any]]:
        return [m for m in self.stored if m["seq"] > after][:limit]

    async def member(self, last_seq: int = 0, streams: tuple[str, ...] = ()) -> Connection:
        """Ada joins; ``streams``: those her joined reply listed as running."""
        conn = Connection("c1", "u1", "Ada", "user", None, 1000, lambda _: None)
        await self.hub.begin_join(conn, SESSION, presence=False)
        self.hub.finish_join(conn, SESSION, last_seq, streams)
        return conn

    async def delta(self, index: int, text: str, *, log_only: bool = False) -> None:
        await self.log.append(STREAM, index, text)
        if not log_only:
            frame = _delta(index, text)
            await self.hub.publish_stream(SESSION, STREAM, frame, index=index)

    async def end(self, seq: int) -> None:
        frame = {"type": "stream.end", "session_id": SESSION, "stream_id": STREAM, "seq": seq}
        await self.log.finish(STREAM, frame)
        await self.hub.publish_stream(SESSION, STREAM, frame, end_seq=seq, is_end=True)


def _delta(index: int, text: str) -> dict[str, Any]:
    return {
        "type": "stream.delta",
        "session_id": SESSION,
        "stream_id": STREAM,
        "index": index,
        "text": text,
    }


@pytest.fixture
async def room() -> AsyncIterator[Room]:
    room = Room()
    await room.hub.start()
    await room.log.open(STREAM, SESSION, {"type": "stream.start", "stream_id": STREAM})
    yield room
    await room.hub.close()


async def frames(conn: Connection, until: str) -> list[dict[str, Any]]:
    """What the connection was sent, up to the first frame of type ``until``."""
    seen: list[dict[str, Any]] = []
    while not any(f["type"] == until for f in seen):
        batch, _ = await asyncio.wait_for(conn.next_batch(), 5)
        seen += [orjson.loads(text) for text in batch]
    return seen


def deltas(seen: list[dict[str, Any]]) -> list[int]:
    return [f["index"] for f in seen if f["type"] == "stream.delta"]


async def test_a_stream_end_overtaken_by_its_answer_from_the_database_still_ends_the_stream(
    room: Room,
) -> None:
    # The answer (seq 1) is committed; before its stream.end is out, the next question
    # (seq 2) is. The gap outlasts the wait, so the answer comes from the database.
    conn = await room.member()
    await room.delta(0, "Hi")
    room.stored = [{"seq": 1, "content": "Hi"}, {"seq": 2, "content": "next"}]
    await room.hub.publish_message(SESSION, room.stored[1])
    seen = await frames(conn, "message")
    assert [f.get("message", {}).get("seq") for f in seen if f["type"] == "message"] == [1, 2]

    await room.end(seq=1)

    assert [f["type"] for f in await frames(conn, "stream.end")] == ["stream.end"]
    # The cursor stays, marked ended: a late copy or a resume brings no second end.
    assert conn.cursors[STREAM].ended


async def joined_mid_stream(room: Room) -> Connection:
    """Ada joins after deltas 0-6 (joined.streams lists the stream); 7, 8 and 9 reach
    her live before she resumes."""
    for index in range(7):
        await room.delta(index, f"d{index} ", log_only=True)
    conn = await room.member(streams=(STREAM,))
    # Her resume comes late: the live ones stop waiting for it and go out first.
    room.hub.streams.resume_wait_s = 0.05
    for index in range(7, 10):
        await room.delta(index, f"d{index} ")
    assert deltas(await frames(conn, "stream.delta")) == [7, 8, 9]
    return conn


async def resume_and_finish(room: Room, conn: Connection, offset: int) -> list[dict[str, Any]]:
    assert await room.hub.replay_stream(conn, SESSION, STREAM, offset)
    await room.delta(10, "d10 ")
    await room.end(seq=1)
    return await frames(conn, "stream.end")


async def test_resuming_at_the_joined_offset_does_not_repeat_the_live_deltas(room: Room) -> None:
    conn = await joined_mid_stream(room)

    # joined.streams said offset 7: the resume docs/protocol.md asks for.
    seen = await resume_and_finish(room, conn, 7)

    assert deltas(seen) == [10]


async def test_resuming_from_zero_after_live_deltas_sends_only_the_ones_not_sent(
    room: Room,
) -> None:
    conn = await joined_mid_stream(room)

    seen = await resume_and_finish(room, conn, 0)

    assert deltas(seen) == [0, 1, 2, 3, 4, 5, 6, 10]
    assert "".join(f["text"] for f in seen if f["type"] == "stream.delta").startswith("d0 d1 ")


async def test_a_resume_past_what_was_sent_replays_from_its_offset(room: Room) -> None:
    conn = await joined_mid_stream(room)
    await room.delta(10, "d10 ", log_only=True)  # a delta this connection never got

    assert await room.hub.replay_stream(conn, SESSION, STREAM, 11)
    await room.delta(11, "d11 ")
    await room.end(seq=1)

    assert deltas(await frames(conn, "stream.end")) == [11]


async def test_a_gap_the_log_can_no_longer_fill_still_lets_the_end_through() -> None:
    now = [0.0]
    room = Room()
    room.log = room.hub.stream_log = MemoryStreamLog(60, clock=lambda: now[0])
    room.hub.streams.log_retry_s = 0.3  # the log is gone for good: give up on it soon
    await room.hub.start()
    try:
        await room.log.open(STREAM, SESSION, {"type": "stream.start", "stream_id": STREAM})
        conn = await room.member()
        await room.delta(0, "a ")
        assert deltas(await frames(conn, "stream.delta")) == [0]
        now[0] = 61.0  # the log is gone (expired, or broken: it reads as unknown)

        # Delta 1 was lost on the way: 2 opens a gap, and the end waits behind its fill.
        await room.hub.publish_stream(SESSION, STREAM, _delta(2, "c "), index=2)
        end = {"type": "stream.end", "session_id": SESSION, "stream_id": STREAM}
        await room.hub.publish_stream(SESSION, STREAM, end, is_end=True)

        seen = await frames(conn, "stream.end")
        assert deltas(seen) == [2] and seen[-1]["type"] == "stream.end"
    finally:
        await room.hub.close()


async def test_an_end_ahead_of_the_members_last_delta_brings_the_missing_ones_from_the_log(
    room: Room,
) -> None:
    conn = await room.member()
    await room.delta(0, "a ")
    # Logged but never published: they went out while Redis was down, or the node
    # that wrote them died before publishing them.
    await room.delta(1, "b ", log_only=True)
    await room.delta(2, "c", log_only=True)
    frame = {"type": "stream.end", "session_id": SESSION, "stream_id": STREAM, "seq": 1}
    await room.log.finish(STREAM, frame)

    await room.hub.publish_stream(SESSION, STREAM, frame, index=3, end_seq=1, is_end=True)

    seen = await frames(conn, "stream.end")
    assert deltas(seen) == [0, 1, 2]
    assert [f["type"] for f in seen].count("stream.end") == 1


async def test_deltas_whose_publish_was_lost_reach_the_member_before_the_publishers_end(
    room: Room,
) -> None:
    from realtime.streams import StreamPublisher

    stream_id = "st2"
    conn = await room.member()
    publish = room.hub.publish_stream
    lost: list[int] = []

    async def lossy(session_id: str, sid: str, frame: dict[str, Any], **kwargs: Any) -> None:
        # The last two deltas go out while the bus is down: logged, never delivered,
        # and no later delta shows the member the hole.
        if frame["type"] == "stream.delta" and frame["index"] in (2, 3):
            lost.append(frame["index"])
            return
        await publish(session_id, sid, frame, **kwargs)

    room.hub.publish_stream = lossy  # type: ignore[method-assign]
    publisher = StreamPublisher(room.hub, room.log, SESSION, stream_id, coalesce_s=0)
    await publisher.start("m", "q1")
    for text in ("a ", "b ", "c ", "d"):
        publisher.add(text)
        await publisher.flush_now()
    end = {"type": "stream.end", "session_id": SESSION, "stream_id": stream_id}
    await publisher.end(end, None)

    seen: list[dict[str, Any]] = []
    while not seen or seen[-1]["type"] != "stream.end":
        seen += [f for f in await frames(conn, "stream.end") if f.get("stream_id") == stream_id]
    assert lost == [2, 3]
    assert [f["index"] for f in seen if f["type"] == "stream.delta"] == [0, 1, 2, 3]
    assert "".join(f["text"] for f in seen if f["type"] == "stream.delta") == "a b c d"
