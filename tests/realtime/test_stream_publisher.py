"""StreamPublisher: deltas coalesced into frames, an end that waits for none of it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from realtime.connection import Connection
from realtime.streams import StreamPublisher
from tests.realtime.test_hub_streams import SESSION, Room, deltas, frames

# Longer than any test may take: were anything to wait out the pause, it would time out.
LONG_PAUSE_S = 60.0


@pytest.fixture
async def room() -> Any:
    room = Room()
    await room.hub.start()
    yield room
    await room.hub.close()


def end_frame(stream_id: str) -> dict[str, Any]:
    return {"type": "stream.end", "session_id": SESSION, "stream_id": stream_id}


def texts(seen: list[dict[str, Any]]) -> list[str]:
    return [f["text"] for f in seen if f["type"] == "stream.delta"]


async def test_a_lone_delta_goes_out_at_once_and_what_follows_it_is_coalesced(
    room: Room,
) -> None:
    conn = await room.member()
    publisher = StreamPublisher(room.hub, room.log, SESSION, "st-p1", coalesce_s=LONG_PAUSE_S)
    await publisher.start("m", "q1")

    publisher.add("Hello")
    # Not held for the pause: the first delta of a quiet stream is published at once.
    first = await frames(conn, "stream.delta")
    publisher.add(" there")
    publisher.add(", Ada")
    await asyncio.wait_for(publisher.end(end_frame("st-p1"), None), 5)
    rest = await frames(conn, "stream.end")

    assert texts(first) == ["Hello"]
    # What came during the pause is one frame with the next index, and the end does
    # not wait the pause out.
    assert deltas(rest) == [1] and texts(rest) == [" there, Ada"]
    assert publisher.frames == 2 and publisher.text == "Hello there, Ada"


async def test_a_resume_brings_coalesced_deltas_with_their_indices(room: Room) -> None:
    writer = await room.member()
    publisher = StreamPublisher(room.hub, room.log, SESSION, "st-p2", coalesce_s=LONG_PAUSE_S)
    await publisher.start("m", "q1")
    publisher.add("one")
    await frames(writer, "stream.delta")
    for word in (" two", " three", " four"):
        publisher.add(word)
    await asyncio.wait_for(publisher.end(end_frame("st-p2"), None), 5)

    # A client that held index 0 reconnects and resumes from 1; another from 0.
    later = Connection("c2", "u2", "Bo", "user", None, 1000, lambda _: None)
    again = Connection("c3", "u3", "Cy", "user", None, 1000, lambda _: None)
    assert await room.hub.replay_stream(later, SESSION, "st-p2", 1)
    assert await room.hub.replay_stream(again, SESSION, "st-p2", 0)

    resumed = await frames(later, "stream.end")
    whole = await frames(again, "stream.end")
    assert deltas(resumed) == [1] and texts(resumed) == [" two three four"]
    assert deltas(whole) == [0, 1] and "".join(texts(whole)) == "one two three four"


async def test_the_pause_grows_only_while_the_upstream_outruns_the_frames(room: Room) -> None:
    conn = await room.member()
    publisher = StreamPublisher(
        room.hub, room.log, SESSION, "st-p3", coalesce_s=0.001, busy_coalesce_s=LONG_PAUSE_S
    )
    await publisher.start("m", "q1")

    # One read per frame: a slow stream. Each delta goes out after the short pause.
    for text in ("a", "b", "c"):
        publisher.add(text)
        assert texts(await frames(conn, "stream.delta")) == [text]
    # Two reads before the flusher ran: the upstream outruns the frames, so what
    # follows waits for the long pause (here: for the end, which cuts it short).
    publisher.add("d")
    publisher.add("e")
    assert texts(await frames(conn, "stream.delta")) == ["de"]
    publisher.add("f")
    await asyncio.sleep(0.05)
    assert conn.queued == 0
    await asyncio.wait_for(publisher.end(end_frame("st-p3"), None), 5)
    rest = await frames(conn, "stream.end")

    assert deltas(rest) == [4] and texts(rest) == ["f"]
