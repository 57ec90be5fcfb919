"""``POST /v1/chat/completions`` driven by the official ``openai`` package against a
live server: the request is a turn in a room, and a WebSocket member of that room
sees the same question and answer, live."""

from __future__ import annotations

import httpx
from openai.types.chat import ChatCompletionChunk

from tests.conftest import LiveServer, TestUser
from tests.fakes.openrouter import FakeOpenRouter, Stream
from tests.frontdoor.conftest import OpenAIFor
from tests.stream.conftest import collect_stream
from tests.ws.conftest import Connect


async def test_a_streamed_completion_is_a_turn_the_room_sees_live(
    room: tuple[TestUser, TestUser, str],
    openai_for: OpenAIFor,
    connect: Connect,
    fake_openrouter: FakeOpenRouter,
) -> None:
    ada, bob, session_id = room
    bob_ws = await connect(bob)
    await bob_ws.request({"type": "join", "session_id": session_id})
    fake_openrouter.enqueue(Stream(["Front ", "door ", "works"]))

    raw = await openai_for(ada.access_token).chat.completions.with_raw_response.create(
        model="openai/gpt-4o-mini",
        messages=[{"role": "user", "content": "through the front door"}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"X-Parley-Session": session_id},
    )
    chunks: list[ChatCompletionChunk] = [chunk async for chunk in raw.parse()]

    assert raw.headers["x-parley-session"] == session_id
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Front door works"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    assert chunks[-1].usage.total_tokens == (
        chunks[-1].usage.prompt_tokens + chunks[-1].usage.completion_tokens
    )
    question = await bob_ws.next("message", lambda f: f.get("session_id") == session_id)
    assert question["message"]["content"] == "through the front door"
    assert question["message"]["user_id"] == ada.id
    seen = await collect_stream(bob_ws)
    assert seen.text == text
    assert seen.end is not None and seen.end["message"]["content"] == text
    assert seen.start["reply_to"] == question["message"]["id"]


async def test_a_completion_without_a_session_starts_one_and_names_it(
    live_client: httpx.AsyncClient,
    room: tuple[TestUser, TestUser, str],
    openai_for: OpenAIFor,
    fake_openrouter: FakeOpenRouter,
) -> None:
    ada, _, _ = room
    fake_openrouter.enqueue(Stream(["A ", "new ", "room"]))

    raw = await openai_for(ada.access_token).chat.completions.with_raw_response.create(
        model="openai/gpt-4o-mini",
        messages=[
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "where am I?"},
        ],
    )
    completion = raw.parse()

    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == "A new room"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    session_id = raw.headers["x-parley-session"]
    session = (await live_client.get(f"/v1/sessions/{session_id}", headers=ada.headers)).json()
    assert session["data"]["owner_id"] == ada.id
    assert session["data"]["system_prompt"] == "Answer briefly."
    assert session["data"]["title"] == "where am I?"
    history = (
        await live_client.get(f"/v1/sessions/{session_id}/messages", headers=ada.headers)
    ).json()["data"]["messages"]
    assert [(m["role"], m["content"]) for m in history] == [
        ("user", "where am I?"),
        ("assistant", "A new room"),
    ]
    sent = fake_openrouter.chat_requests[0].json or {}  # the answer's (memory comes after)
    assert sent["messages"][0]["role"] == "system"
    assert "Answer briefly." in sent["messages"][0]["content"]


async def test_an_identical_retry_stores_the_turn_once_and_gets_the_same_answer(
    live_client: httpx.AsyncClient,
    room: tuple[TestUser, TestUser, str],
    openai_for: OpenAIFor,
    fake_openrouter: FakeOpenRouter,
) -> None:
    ada, _, session_id = room
    fake_openrouter.enqueue(Stream(["Only ", "once"]))
    client = openai_for(ada.access_token)
    request = {
        "model": "openai/gpt-4o-mini",
        "messages": [{"role": "user", "content": "say it once"}],
        "extra_headers": {"X-Parley-Session": session_id},
    }

    first = await client.chat.completions.create(**request)  # type: ignore[call-overload]
    again = await client.chat.completions.create(**request)  # type: ignore[call-overload]
    streamed = await client.chat.completions.create(**request, stream=True)  # type: ignore[call-overload]
    text = "".join([c.choices[0].delta.content or "" async for c in streamed if c.choices])

    assert first.choices[0].message.content == "Only once"
    assert again.choices[0].message.content == "Only once" == text
    assert len(fake_openrouter.chat_requests) == 1
    history = (
        await live_client.get(f"/v1/sessions/{session_id}/messages", headers=ada.headers)
    ).json()["data"]["messages"]
    assert [m["role"] for m in history] == ["user", "assistant"]


async def test_the_next_turn_of_the_conversation_is_a_new_message_answered_from_the_room(
    live_client: httpx.AsyncClient,
    room: tuple[TestUser, TestUser, str],
    openai_for: OpenAIFor,
    fake_openrouter: FakeOpenRouter,
) -> None:
    ada, _, session_id = room
    fake_openrouter.enqueue(Stream(["One"]), Stream(["Two"]))
    client = openai_for(ada.access_token)
    headers = {"X-Parley-Session": session_id}
    messages = [{"role": "user", "content": "count"}]

    first = await client.chat.completions.create(
        model="parley",
        messages=messages,
        extra_headers=headers,  # type: ignore[arg-type]
    )
    messages += [
        {"role": "assistant", "content": first.choices[0].message.content or ""},
        {"role": "user", "content": "count"},
    ]
    second = await client.chat.completions.create(
        model="parley",
        messages=messages,
        extra_headers=headers,  # type: ignore[arg-type]
    )

    assert (first.choices[0].message.content, second.choices[0].message.content) == ("One", "Two")
    history = (
        await live_client.get(f"/v1/sessions/{session_id}/messages", headers=ada.headers)
    ).json()["data"]["messages"]
    assert [m["content"] for m in history] == ["count", "One", "count", "Two"]
    # The room's history went upstream: both questions and the first answer.
    answers = [r.json for r in fake_openrouter.chat_requests if r.json and r.json.get("stream")]
    sent = answers[-1]  # the second answer's (memory extraction does not stream)
    contents = [m["content"] for m in sent["messages"] if m["role"] != "system"]
    assert contents[-3:] == ["count", "One", "count"]


async def test_models_lists_the_operators_allow_list(
    room: tuple[TestUser, TestUser, str], openai_for: OpenAIFor, live_server: LiveServer
) -> None:
    ada, _, _ = room
    page = await openai_for(ada.access_token).models.list()
    ids = [model.id for model in page.data]
    assert ids == [*live_server.container.settings.allowed_models, "parley"]
    assert {model.object for model in page.data} == {"model"}


async def test_a_retry_while_the_answer_runs_follows_the_same_answer_from_its_start(
    live_client: httpx.AsyncClient,
    room: tuple[TestUser, TestUser, str],
    openai_for: OpenAIFor,
    fake_openrouter: FakeOpenRouter,
) -> None:
    ada, _, session_id = room
    fake_openrouter.enqueue(Stream(["slow ", "and ", "steady ", "wins"], delay_s=0.1))
    client = openai_for(ada.access_token)
    request = {
        "model": "parley",
        "messages": [{"role": "user", "content": "tell me slowly"}],
        "extra_headers": {"X-Parley-Session": session_id},
        "stream": True,
    }

    first = await client.chat.completions.create(**request)  # type: ignore[call-overload]
    first_text = ""
    async for chunk in first:  # up to the first text: the answer is running
        if chunk.choices and chunk.choices[0].delta.content:
            first_text = chunk.choices[0].delta.content
            break
    retry = await client.chat.completions.create(**request)  # type: ignore[call-overload]
    retried = "".join([c.choices[0].delta.content or "" async for c in retry if c.choices])
    rest = "".join([c.choices[0].delta.content or "" async for c in first if c.choices])

    assert retried == first_text + rest == "slow and steady wins"
    assert len([r for r in fake_openrouter.chat_requests if (r.json or {}).get("stream")]) == 1
    history = (
        await live_client.get(f"/v1/sessions/{session_id}/messages", headers=ada.headers)
    ).json()["data"]["messages"]
    assert [m["role"] for m in history] == ["user", "assistant"]


async def test_metadata_or_user_can_name_the_room_and_a_closed_room_is_a_409(
    live_client: httpx.AsyncClient,
    room: tuple[TestUser, TestUser, str],
    openai_for: OpenAIFor,
    fake_openrouter: FakeOpenRouter,
) -> None:
    ada, _, session_id = room
    fake_openrouter.enqueue(Stream(["by metadata"]), Stream(["by user"]))
    client = openai_for(ada.access_token)

    by_metadata = await client.chat.completions.with_raw_response.create(
        model="parley",
        messages=[{"role": "user", "content": "one"}],
        metadata={"session_id": session_id},
    )
    by_user = await client.chat.completions.with_raw_response.create(
        model="parley", messages=[{"role": "user", "content": "two"}], user=session_id
    )
    await live_client.post(f"/v1/sessions/{session_id}/close", headers=ada.headers)
    closed = await live_client.post(
        "/v1/chat/completions",
        json={"model": "parley", "messages": [{"role": "user", "content": "three"}]},
        headers={**ada.headers, "X-Parley-Session": session_id},
    )

    assert by_metadata.headers["x-parley-session"] == session_id
    assert by_user.headers["x-parley-session"] == session_id
    assert by_user.parse().choices[0].message.content == "by user"
    assert closed.status_code == 409
    assert closed.json()["error"]["type"] == "invalid_request_error"
    history = (
        await live_client.get(f"/v1/sessions/{session_id}/messages", headers=ada.headers)
    ).json()["data"]["messages"]
    assert [m["content"] for m in history] == ["one", "by metadata", "two", "by user"]


async def test_a_retry_answered_from_the_store_leaves_no_listener_in_the_room(
    live_server: LiveServer,
    room: tuple[TestUser, TestUser, str],
    openai_for: OpenAIFor,
    fake_openrouter: FakeOpenRouter,
) -> None:
    ada, _, session_id = room
    fake_openrouter.enqueue(Stream(["Kept"]))
    client = openai_for(ada.access_token)
    request = {
        "model": "parley",
        "messages": [{"role": "user", "content": "keep it"}],
        "extra_headers": {"X-Parley-Session": session_id},
    }
    hub = live_server.container.hub

    await client.chat.completions.create(**request)  # type: ignore[call-overload]
    again = await client.chat.completions.create(**request)  # type: ignore[call-overload]
    room_now = hub.rooms.get(session_id)

    assert again.choices[0].message.content == "Kept"
    assert room_now is None or not room_now.connections  # each request left the room
