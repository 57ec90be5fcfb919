from __future__ import annotations

import asyncio

import httpx
import orjson
from httpx_sse import aconnect_sse

from tests.conftest import TestUser, register_user
from tests.fakes.openrouter import FakeOpenRouter, Stream
from tests.ws.conftest import Connect


async def test_posting_with_accept_event_stream_streams_the_answer_as_server_sent_events(
    live_client: httpx.AsyncClient,
    room: tuple[TestUser, TestUser, str],
    fake_openrouter: FakeOpenRouter,
) -> None:
    ada, _, session_id = room
    fake_openrouter.enqueue(Stream(["SSE ", "works"]))

    async with aconnect_sse(
        live_client,
        "POST",
        f"/v1/sessions/{session_id}/messages",
        json={"content": "over SSE"},
        headers=ada.headers,
    ) as source:
        assert source.response.status_code == 201
        events = [(e.event, orjson.loads(e.data)) async for e in source.aiter_sse()]

    names = [name for name, _ in events]
    assert names[0] == "message" and names[1] == "stream.start"
    assert names[-1] == "stream.end"
    assert set(names) <= {"message", "stream.start", "stream.status", "stream.delta", "stream.end"}
    deltas = [frame["text"] for name, frame in events if name == "stream.delta"]
    end = events[-1][1]
    assert "".join(deltas) == "SSE works" == end["message"]["content"]
    assert events[0][1]["message"]["content"] == "over SSE"


async def test_posting_without_a_reply_over_sse_sends_only_the_stored_message(
    live_client: httpx.AsyncClient,
    room: tuple[TestUser, TestUser, str],
) -> None:
    ada, _, session_id = room
    async with aconnect_sse(
        live_client,
        "POST",
        f"/v1/sessions/{session_id}/messages",
        json={"content": "quiet", "reply": "none"},
        headers=ada.headers,
    ) as source:
        events = [e.event async for e in source.aiter_sse()]
    assert events == ["message"]


async def test_a_stranger_posting_over_sse_gets_not_found_and_asks_no_model(
    live_client: httpx.AsyncClient,
    room: tuple[TestUser, TestUser, str],
    fake_openrouter: FakeOpenRouter,
    connect: Connect,
) -> None:
    ada, _, session_id = room
    eve = await register_user(live_client, "Eve")
    ada_ws = await connect(ada)
    await ada_ws.request({"type": "join", "session_id": session_id})

    response = await live_client.post(
        f"/v1/sessions/{session_id}/messages",
        json={"content": "let me in"},
        headers={**eve.headers, "Accept": "text/event-stream"},
    )
    await asyncio.sleep(0.3)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert fake_openrouter.chat_requests == []
    assert [f for f in ada_ws.seen if f["type"] in ("message", "stream.start")] == []
