from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from db.repositories import messages as messages_repo
from db.repositories import usage as usage_repo
from realtime.stream_log import StreamSnapshot
from server.assistant import takeover
from tests.conftest import LiveServer, TestUser
from tests.fakes.openrouter import FakeOpenRouter, HttpError, MidStreamError, Stream
from tests.stream.conftest import collect_stream
from tests.ws.conftest import Connect
from tests.wsclient import WSClient


async def test_every_member_receives_the_whole_stream_and_it_equals_the_stored_answer(
    connect: Connect,
    room: tuple[TestUser, TestUser, str],
    fake_openrouter: FakeOpenRouter,
    live_client: httpx.AsyncClient,
) -> None:
    ada, bob, session_id = room
    fake_openrouter.enqueue(Stream(["The ", "answer ", "is ", "42."]))
    ada_ws, bob_ws = await connect(ada), await connect(bob)
    await ada_ws.request({"type": "join", "session_id": session_id})
    await bob_ws.request({"type": "join", "session_id": session_id})

    ack = await ada_ws.request(
        {"type": "message", "session_id": session_id, "content": "What is the answer?"}
    )
    ada_stream = await collect_stream(ada_ws, ack["stream_id"])
    bob_stream = await collect_stream(bob_ws, ack["stream_id"])

    for streamed in (ada_stream, bob_stream):
        assert streamed.start["model"] == "openai/gpt-4o-mini"
        assert streamed.start["reply_to"] == ack["message"]["id"]
        assert [d["index"] for d in streamed.deltas] == list(range(len(streamed.deltas)))
        assert streamed.text == "The answer is 42."
        assert streamed.end is not None
        assert streamed.end["finish_reason"] == "stop"
        assert streamed.end["message"]["content"] == "The answer is 42."
        assert streamed.end["message"]["role"] == "assistant"
        assert streamed.end["message"]["seq"] == ack["message"]["seq"] + 1
        assert streamed.end["usage"]["completion_tokens"] > 0
        assert [s["stage"] for s in streamed.statuses][-1] == "generating"
    request = fake_openrouter.chat_requests[-1]
    assert request.json is not None and request.json["stream"] is True
    assert request.json["messages"][-1] == {"role": "user", "content": "What is the answer?"}
    assert request.headers["authorization"] == "Bearer sk-or-test"
    history = await live_client.get(f"/v1/sessions/{session_id}/messages", headers=ada.headers)
    assert [m["role"] for m in history.json()["data"]["messages"]] == ["user", "assistant"]
    assert ada_ws.unread("message") == [] or all(
        f["message"]["role"] == "user" for f in ada_ws.unread("message")
    )


async def test_a_generation_is_stored_when_the_client_that_asked_disconnects(
    connect: Connect,
    room: tuple[TestUser, TestUser, str],
    fake_openrouter: FakeOpenRouter,
    live_client: httpx.AsyncClient,
) -> None:
    ada, bob, session_id = room
    fake_openrouter.enqueue(Stream(["slow ", "but ", "sure"], delay_s=0.05))
    ada_ws, bob_ws = await connect(ada), await connect(bob)
    await ada_ws.request({"type": "join", "session_id": session_id})
    await bob_ws.request({"type": "join", "session_id": session_id})

    ack = await ada_ws.request({"type": "message", "session_id": session_id, "content": "go"})
    await ada_ws.next("stream.start")
    await ada_ws.close()

    streamed = await collect_stream(bob_ws, ack["stream_id"])
    assert streamed.end is not None and streamed.end["message"]["content"] == "slow but sure"
    history = await live_client.get(f"/v1/sessions/{session_id}/messages", headers=bob.headers)
    assert history.json()["data"]["messages"][-1]["content"] == "slow but sure"


async def test_an_answer_after_a_quiet_spell_reuses_the_upstream_connection(
    connect: Connect,
    room: tuple[TestUser, TestUser, str],
    fake_openrouter: FakeOpenRouter,
) -> None:
    # httpx drops idle connections after 5 s by default: past that, each answer paid
    # for a new connection (against OpenRouter, a TLS handshake).
    ada, _, session_id = room
    ada_ws = await connect(ada)
    await ada_ws.request({"type": "join", "session_id": session_id})
    for n in range(2):
        if n:
            await asyncio.sleep(5.5)
        fake_openrouter.enqueue(Stream(["still ", "here"]))
        ack = await ada_ws.request({"type": "message", "session_id": session_id, "content": "hi"})
        assert (await collect_stream(ada_ws, ack["stream_id"])).text == "still here"

    first, second = fake_openrouter.chat_requests
    assert first.peer == second.peer


async def test_a_generation_another_node_took_over_stores_and_ends_nothing_more(
    connect: Connect,
    room: tuple[TestUser, TestUser, str],
    fake_openrouter: FakeOpenRouter,
    live_server: LiveServer,
    live_client: httpx.AsyncClient,
) -> None:
    # A node paused for longer than its presence TTL is taken for dead, and another
    # node ends its streams (server.assistant.takeover). When it wakes, its answers
    # must not be stored, nor ended, a second time.
    ada, _, session_id = room
    fake_openrouter.enqueue(Stream(["taken ", "over ", "meanwhile"], delay_s=0.05))
    ada_ws = await connect(ada)
    await ada_ws.request({"type": "join", "session_id": session_id})
    ack = await ada_ws.request({"type": "message", "session_id": session_id, "content": "go"})
    await ada_ws.next("stream.delta")
    generation = live_server.container.assistant.running[ack["stream_id"]]

    assert await live_server.container.stream_log.settle(ack["stream_id"])
    await asyncio.wait_for(generation.done.wait(), 5)

    history = await live_client.get(f"/v1/sessions/{session_id}/messages", headers=ada.headers)
    assert [m["role"] for m in history.json()["data"]["messages"]] == ["user"]
    await asyncio.sleep(0.1)
    assert ada_ws.unread("stream.end") == []


async def test_cancel_from_another_member_stops_the_upstream_and_keeps_the_partial_text(
    connect: Connect,
    room: tuple[TestUser, TestUser, str],
    fake_openrouter: FakeOpenRouter,
) -> None:
    ada, bob, session_id = room
    fake_openrouter.enqueue(Stream([f"w{i} " for i in range(200)], delay_s=0.02))
    ada_ws, bob_ws = await connect(ada), await connect(bob)
    await ada_ws.request({"type": "join", "session_id": session_id})
    await bob_ws.request({"type": "join", "session_id": session_id})
    ack = await ada_ws.request({"type": "message", "session_id": session_id, "content": "long"})
    await bob_ws.next("stream.delta")

    reply = await bob_ws.request(
        {"type": "cancel", "session_id": session_id, "stream_id": ack["stream_id"]}
    )

    assert reply["type"] == "ack"
    streamed = await collect_stream(ada_ws, ack["stream_id"])
    assert streamed.end is not None
    assert streamed.end["finish_reason"] == "cancelled"
    assert streamed.end["message"]["status"] == "cancelled"
    assert streamed.end["message"]["content"] == streamed.text
    assert 0 < len(streamed.text.split()) < 200
    assert await fake_openrouter.wait_disconnect(1.0)


async def test_an_upstream_failure_before_any_text_ends_the_stream_with_unavailable(
    connect: Connect,
    room: tuple[TestUser, TestUser, str],
    fake_openrouter: FakeOpenRouter,
) -> None:
    ada, _, session_id = room
    fake_openrouter.enqueue(*[HttpError(503, "no capacity")] * 3)
    ada_ws = await connect(ada)
    await ada_ws.request({"type": "join", "session_id": session_id})

    ack = await ada_ws.request({"type": "message", "session_id": session_id, "content": "hi"})
    streamed = await collect_stream(ada_ws, ack["stream_id"])

    assert streamed.end is not None
    assert streamed.end["finish_reason"] == "error"
    assert streamed.end["error"]["code"] == "unavailable"
    # The failure is stored, so that it shows in place with a retry (issue 16, item 3).
    failed = streamed.end["message"]
    assert (failed["status"], failed["content"], failed["role"]) == ("error", "", "assistant")
    assert failed["error"] == streamed.end["error"]
    assert failed["reply_to"] == ack["message"]["id"]
    assert len(fake_openrouter.chat_requests) == 3  # one try and two retries


async def test_an_error_inside_the_stream_stores_the_partial_answer_marked_as_error(
    connect: Connect,
    room: tuple[TestUser, TestUser, str],
    fake_openrouter: FakeOpenRouter,
) -> None:
    ada, _, session_id = room
    fake_openrouter.enqueue(MidStreamError(["Half ", "an "]))
    ada_ws = await connect(ada)
    await ada_ws.request({"type": "join", "session_id": session_id})

    ack = await ada_ws.request({"type": "message", "session_id": session_id, "content": "hi"})
    streamed = await collect_stream(ada_ws, ack["stream_id"])

    assert streamed.end is not None
    assert streamed.end["finish_reason"] == "error"
    assert streamed.end["message"]["content"] == "Half an "
    assert streamed.end["message"]["status"] == "error"


async def test_a_rate_limited_upstream_is_retried_then_the_fallback_model_answers(
    connect: Connect,
    room: tuple[TestUser, TestUser, str],
    fake_openrouter: FakeOpenRouter,
    live_server: LiveServer,
) -> None:
    ada, _, session_id = room
    fake_openrouter.enqueue(
        *[HttpError(429, "slow down", retry_after=0.01)] * 3, model="openai/gpt-4o-mini"
    )
    fake_openrouter.enqueue(Stream(["fallback ", "here"]), model="meta-llama/llama-3-8b-instruct")
    live_server.container.llm.fallback_models = ["meta-llama/llama-3-8b-instruct"]
    live_server.container.settings.llm_fallback_models = ["meta-llama/llama-3-8b-instruct"]
    ada_ws = await connect(ada)
    await ada_ws.request({"type": "join", "session_id": session_id})

    ack = await ada_ws.request({"type": "message", "session_id": session_id, "content": "hi"})
    streamed = await collect_stream(ada_ws, ack["stream_id"])

    assert streamed.end is not None
    assert streamed.end["model"] == "meta-llama/llama-3-8b-instruct"
    assert streamed.start["model"] == "openai/gpt-4o-mini"
    assert streamed.text == "fallback here"
    assert fake_openrouter.chat_models == ["openai/gpt-4o-mini"] * 3 + [
        "meta-llama/llama-3-8b-instruct"
    ]


async def test_a_cancelled_streams_usage_is_recovered_from_the_generation_endpoint(
    connect: Connect,
    room: tuple[TestUser, TestUser, str],
    fake_openrouter: FakeOpenRouter,
    live_server: LiveServer,
) -> None:
    ada, _, session_id = room
    fake_openrouter.enqueue(Stream([f"w{i} " for i in range(200)], delay_s=0.02))
    ada_ws = await connect(ada)
    await ada_ws.request({"type": "join", "session_id": session_id})
    ack = await ada_ws.request({"type": "message", "session_id": session_id, "content": "go"})
    for _ in range(5):
        await ada_ws.next("stream.delta")
    await ada_ws.request(
        {"type": "cancel", "session_id": session_id, "stream_id": ack["stream_id"]}
    )
    streamed_end = await ada_ws.next("stream.end")
    assert streamed_end["finish_reason"] == "cancelled"
    assert await fake_openrouter.wait_disconnect(2.0)

    database = live_server.container.database
    for _ in range(100):
        recorded = list(fake_openrouter.generations.values())
        async with database.transaction() as session:
            events = await usage_repo.usage_for_session(session, uuid.UUID(session_id))
        if recorded and events and events[0].completion_tokens == recorded[0]["tokens_completion"]:
            break
        await asyncio.sleep(0.05)
    upstream = recorded[0]
    lookups = [r for r in fake_openrouter.requests if r.path.endswith("/generation")]
    assert [r.query.get("id") for r in lookups][:1] == [upstream["id"]]
    assert events[0].outcome == "cancelled"
    assert events[0].completion_tokens == upstream["tokens_completion"]
    assert events[0].prompt_tokens == upstream["tokens_prompt"]


async def question_without_answer(
    connect: Connect, user: TestUser, session_id: str
) -> tuple[WSClient, str]:
    """``user`` joined and asked with ``reply: "none"``: (their socket, the question's id)."""
    ws = await connect(user)
    await ws.request({"type": "join", "session_id": session_id})
    frame = {"type": "message", "session_id": session_id, "content": "go", "reply": "none"}
    return ws, (await ws.request(frame))["message"]["id"]


async def node_dies_leaving(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch, orphan: StreamSnapshot
) -> None:
    """This node finds a dead node that was writing ``orphan`` (presence's report)."""

    async def claim_orphans(node_id: str) -> list[StreamSnapshot]:
        return [orphan] if node_id == "dead-node" else []

    monkeypatch.setattr(server.container.stream_log, "claim_orphans", claim_orphans)
    await server.container.presence.on_node_gone("dead-node")


def orphan_stream(session_id: str, stream_id: str, question_id: str, text: str) -> StreamSnapshot:
    start = {"type": "stream.start", "session_id": session_id, "stream_id": stream_id}
    start |= {"model": "openai/gpt-4o-mini", "reply_to": question_id}
    return StreamSnapshot(stream_id, session_id, [(0, text)], None, start)


async def test_a_taken_over_stream_whose_answer_was_stored_sends_that_answer(
    connect: Connect,
    room: tuple[TestUser, TestUser, str],
    live_server: LiveServer,
    live_client: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The dead node got as far as storing its answer, not as far as stream.end.
    ada, _, session_id = room
    ada_ws, question_id = await question_without_answer(connect, ada, session_id)
    async with live_server.container.database.transaction() as db:
        appended = await messages_repo.append_answer(
            db,
            session_id=uuid.UUID(session_id),
            content="stored in full",
            status="complete",
            model="openai/gpt-4o-mini",
            reply_to=uuid.UUID(question_id),
        )
    stored_id = str(appended.message.id)

    orphan = orphan_stream(session_id, "gone-1", question_id, "stored ")
    await node_dies_leaving(live_server, monkeypatch, orphan)

    end = await ada_ws.next("stream.end", lambda f: f["stream_id"] == "gone-1")
    assert end["finish_reason"] == "error" and end["error"]["code"] == "unavailable"
    assert end["message"]["id"] == stored_id
    assert end["message"]["content"] == "stored in full"
    history = await live_client.get(f"/v1/sessions/{session_id}/messages", headers=ada.headers)
    assert [m["role"] for m in history.json()["data"]["messages"]] == ["user", "assistant"]


async def test_a_taken_over_stream_ends_even_when_its_answer_cannot_be_stored(
    connect: Connect,
    room: tuple[TestUser, TestUser, str],
    live_server: LiveServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ada, _, session_id = room
    ada_ws, question_id = await question_without_answer(connect, ada, session_id)

    async def hung_database(*args: Any, **kwargs: Any) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(messages_repo, "find_answer", hung_database)
    monkeypatch.setattr(takeover, "STORE_TIMEOUT_S", 0.2)
    orphan = orphan_stream(session_id, "gone-2", question_id, "half an ")
    await node_dies_leaving(live_server, monkeypatch, orphan)

    end = await ada_ws.next("stream.end", lambda f: f["stream_id"] == "gone-2")
    assert end["finish_reason"] == "error" and end["message"] is None
