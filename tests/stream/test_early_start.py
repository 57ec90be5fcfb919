"""The assistant starts reading the context and asking the model while the question
is stored; the room sees the answer only after the question, and a question that is
not stored (refused, or a retry of one already stored) gets no answer at all."""

from __future__ import annotations

import asyncio

import httpx

from tests.conftest import TestUser
from tests.fakes.openrouter import FakeOpenRouter, Stream
from tests.stream.conftest import collect_stream
from tests.ws.conftest import Connect


async def test_members_see_the_question_before_the_answer_starts(
    connect: Connect,
    room: tuple[TestUser, TestUser, str],
    fake_openrouter: FakeOpenRouter,
) -> None:
    ada, bob, session_id = room
    fake_openrouter.enqueue(Stream(["quick"]))
    ada_ws, bob_ws = await connect(ada), await connect(bob)
    await ada_ws.request({"type": "join", "session_id": session_id})
    await bob_ws.request({"type": "join", "session_id": session_id})

    ack = await ada_ws.request({"type": "message", "session_id": session_id, "content": "hi"})
    await collect_stream(bob_ws, ack["stream_id"])

    kinds = [f["type"] for f in bob_ws.seen if f["type"] in ("message", "stream.start")]
    assert kinds == ["message", "stream.start"]
    question = next(f for f in bob_ws.seen if f["type"] == "message")
    assert question["message"]["id"] == ack["message"]["id"]


async def test_a_retried_message_is_answered_once(
    connect: Connect,
    room: tuple[TestUser, TestUser, str],
    fake_openrouter: FakeOpenRouter,
    live_client: httpx.AsyncClient,
) -> None:
    ada, _, session_id = room
    fake_openrouter.enqueue(Stream(["only ", "once"]))
    ada_ws = await connect(ada)
    await ada_ws.request({"type": "join", "session_id": session_id})
    frame = {"type": "message", "session_id": session_id, "content": "q", "client_msg_id": "c1"}

    first = await ada_ws.request(frame)
    streamed = await collect_stream(ada_ws, first["stream_id"])
    for _ in range(3):  # a client resending after each of three reconnects
        again = await ada_ws.request(frame)
    await asyncio.sleep(0.3)

    assert streamed.text == "only once"
    assert again["message"] == first["message"]
    assert again.get("stream_id") is None
    # Known here as retries: no request was even started for them.
    assert len(fake_openrouter.chat_requests) == 1
    assert [f["stream_id"] for f in ada_ws.seen if f["type"] == "stream.start"] == [
        first["stream_id"]
    ]
    history = await live_client.get(f"/v1/sessions/{session_id}/messages", headers=ada.headers)
    assert [m["role"] for m in history.json()["data"]["messages"]] == ["user", "assistant"]


async def test_a_message_to_a_closed_session_is_refused_and_asks_no_model(
    connect: Connect,
    room: tuple[TestUser, TestUser, str],
    fake_openrouter: FakeOpenRouter,
    live_client: httpx.AsyncClient,
) -> None:
    ada, _, session_id = room
    ada_ws = await connect(ada)
    await ada_ws.request({"type": "join", "session_id": session_id})
    closed = await live_client.post(f"/v1/sessions/{session_id}/close", headers=ada.headers)
    assert closed.status_code == 200, closed.text

    reply = await ada_ws.request({"type": "message", "session_id": session_id, "content": "q"})
    await asyncio.sleep(0.3)

    assert (reply["type"], reply["code"]) == ("error", "conflict")
    assert fake_openrouter.chat_requests == []
    assert [f for f in ada_ws.seen if f["type"].startswith("stream.")] == []
