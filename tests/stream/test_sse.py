from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest
from httpx_sse import aconnect_sse

from tests.conftest import LiveServer, TestUser, register_user
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


async def sse_events(
    client: httpx.AsyncClient,
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    *,
    break_after_deltas: int | None = None,
) -> tuple[int, list[tuple[str, dict[str, Any], str]]]:
    """(status, [(event, frame, last event id)]); with ``break_after_deltas``, the
    connection is dropped after that many deltas, as a flaky network would."""
    events: list[tuple[str, dict[str, Any], str]] = []
    deltas = 0
    async with aconnect_sse(client, "POST", url, json=body, headers=headers) as source:
        async for event in source.aiter_sse():
            events.append((event.event, orjson.loads(event.data), event.id))
            deltas += event.event == "stream.delta"
            if deltas == break_after_deltas:
                break
        return source.response.status_code, events


def deltas_of(events: list[tuple[str, dict[str, Any], str]]) -> list[tuple[int, str]]:
    return [(frame["index"], frame["text"]) for name, frame, _ in events if name == "stream.delta"]


async def ask_and_break_off(
    client: httpx.AsyncClient,
    user: TestUser,
    session_id: str,
    fake: FakeOpenRouter,
    client_msg_id: str,
    after_deltas: int,
    delay_s: float = 0.02,
) -> tuple[str, dict[str, Any], int, list[tuple[str, dict[str, Any], str]]]:
    """A question whose answer streams slowly, and a connection dropped after
    ``after_deltas`` deltas: (url, body, status, the events before the drop)."""
    fake.enqueue(Stream([f"t{i} " for i in range(40)], delay_s=delay_s))
    url = f"/v1/sessions/{session_id}/messages"
    body = {"content": "tell me slowly", "client_msg_id": client_msg_id}
    status, events = await sse_events(
        client, url, body, user.headers, break_after_deltas=after_deltas
    )
    return url, body, status, events


async def test_an_sse_answer_that_broke_off_goes_on_from_its_last_event_id(
    live_client: httpx.AsyncClient,
    room: tuple[TestUser, TestUser, str],
    fake_openrouter: FakeOpenRouter,
) -> None:
    ada, _, session_id = room
    url, body, status, before = await ask_and_break_off(
        live_client, ada, session_id, fake_openrouter, "sse-retry-1", after_deltas=3
    )
    stream_id = next(frame["stream_id"] for name, frame, _ in before if name == "stream.start")
    last_id = before[-1][2]
    status_again, after = await sse_events(
        live_client, url, body, {**ada.headers, "Last-Event-ID": last_id}
    )

    assert (status, status_again) == (201, 200)  # stored once
    assert last_id == f"{stream_id}:3"
    assert (
        after[0][0] == "message" and after[0][1]["message"]["id"] == before[0][1]["message"]["id"]
    )
    received = deltas_of(before) + deltas_of(after)
    assert [index for index, _ in received] == list(range(len(received)))  # none lost or repeated
    name, end, _ = after[-1]
    assert name == "stream.end" and end["stream_id"] == stream_id
    assert "".join(text for _, text in received) == end["message"]["content"]


async def test_an_sse_retry_without_an_event_id_gets_the_running_answer_from_its_start(
    live_client: httpx.AsyncClient,
    room: tuple[TestUser, TestUser, str],
    fake_openrouter: FakeOpenRouter,
) -> None:
    ada, _, session_id = room
    url, body, _, _ = await ask_and_break_off(
        live_client, ada, session_id, fake_openrouter, "sse-retry-2", after_deltas=2
    )
    status, events = await sse_events(live_client, url, body, ada.headers)

    names = [name for name, _, _ in events]
    assert status == 200 and names[:2] == ["message", "stream.start"]
    received = deltas_of(events)
    assert [index for index, _ in received] == list(range(len(received)))
    assert names[-1] == "stream.end"
    assert "".join(text for _, text in received) == events[-1][1]["message"]["content"]
    answers = [r for r in fake_openrouter.chat_requests if (r.json or {}).get("stream")]
    assert len(answers) == 1  # one answer, streamed twice


async def test_an_sse_retry_with_another_answers_event_id_gets_its_own_answer(
    live_client: httpx.AsyncClient,
    room: tuple[TestUser, TestUser, str],
    fake_openrouter: FakeOpenRouter,
) -> None:
    ada, _, session_id = room
    second = [f"s{i} " for i in range(30)]
    fake_openrouter.enqueue(Stream(["first ", "answer"]), Stream(second, delay_s=0.02))
    url = f"/v1/sessions/{session_id}/messages"
    _, first = await sse_events(live_client, url, {"content": "one"}, ada.headers)
    body = {"content": "two", "client_msg_id": "sse-retry-3"}
    await sse_events(live_client, url, body, ada.headers, break_after_deltas=2)

    stale_id = next(event_id for name, _, event_id in first if name == "stream.delta")
    status, events = await sse_events(
        live_client, url, body, {**ada.headers, "Last-Event-ID": stale_id}
    )

    first_stream = first[1][1]["stream_id"]
    assert status == 200 and all(frame.get("stream_id") != first_stream for _, frame, _ in events)
    assert [name for name, _, _ in events][:2] == ["message", "stream.start"]
    assert "".join(text for _, text in deltas_of(events)) == "".join(second)


async def test_deltas_arriving_while_an_sse_retry_is_stored_come_once_and_in_order(
    live_client: httpx.AsyncClient,
    live_server: LiveServer,
    room: tuple[TestUser, TestUser, str],
    fake_openrouter: FakeOpenRouter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ada, _, session_id = room
    url, body, _, before = await ask_and_break_off(
        live_client, ada, session_id, fake_openrouter, "sse-retry-4", after_deltas=2, delay_s=0.01
    )
    messages = live_server.container.messages
    real_post = messages.post

    async def slow_post(*args: Any, **kwargs: Any) -> Any:
        posted = await real_post(*args, **kwargs)
        await asyncio.sleep(0.1)  # several deltas go out meanwhile
        return posted

    monkeypatch.setattr(messages, "post", slow_post)
    _, after = await sse_events(
        live_client, url, body, {**ada.headers, "Last-Event-ID": before[-1][2]}
    )

    received = deltas_of(before) + deltas_of(after)
    assert [index for index, _ in received] == list(range(len(received)))
    assert "".join(text for _, text in received) == after[-1][1]["message"]["content"]
