"""Versions over the WebSocket, on the real app (issue 16, items 3 and 4): a failed
answer stored and retried in place, regenerate, edit, switching versions; every member
sees each change live as ``message.version``; the next turn reads the version shown."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import TestUser
from tests.fakes.openrouter import FakeOpenRouter, Hang, HttpError, Stream
from tests.stream.conftest import collect_stream
from tests.ws.conftest import Connect
from tests.wsclient import WSClient


async def joined_pair(
    connect: Connect, room: tuple[TestUser, TestUser, str]
) -> tuple[WSClient, WSClient, str]:
    ada, bob, session_id = room
    ada_ws, bob_ws = await connect(ada), await connect(bob)
    await ada_ws.request({"type": "join", "session_id": session_id})
    await bob_ws.request({"type": "join", "session_id": session_id})
    return ada_ws, bob_ws, session_id


async def ask(ws: WSClient, session_id: str, content: str) -> tuple[dict[str, Any], Any]:
    ack = await ws.request({"type": "message", "session_id": session_id, "content": content})
    streamed = await collect_stream(ws, ack["stream_id"])
    assert streamed.end is not None
    return ack, streamed.end


async def test_a_failed_answer_is_stored_and_a_retry_replaces_it_for_everyone(
    connect: Connect,
    room: tuple[TestUser, TestUser, str],
    fake_openrouter: FakeOpenRouter,
    live_client: httpx.AsyncClient,
) -> None:
    ada_ws, bob_ws, session_id = await joined_pair(connect, room)
    fake_openrouter.enqueue(*[HttpError(503, "no capacity")] * 3)
    ack, end = await ask(ada_ws, session_id, "What is 2+2?")
    failed = end["message"]
    assert failed["status"] == "error" and failed["error"]["code"] == "unavailable"
    history = await live_client.get(f"/v1/sessions/{session_id}/messages", headers=room[1].headers)
    assert history.json()["data"]["messages"][-1]["status"] == "error"

    fake_openrouter.enqueue(Stream(["4"]))
    retry = await bob_ws.request(
        {"type": "regenerate", "session_id": session_id, "message_id": failed["id"]}
    )
    assert retry["type"] == "ack" and retry["stream_id"]
    for ws in (ada_ws, bob_ws):
        streamed = await collect_stream(ws, retry["stream_id"])
        assert streamed.start["reply_to"] == ack["message"]["id"]
        assert streamed.end is not None
        shown = streamed.end["message"]
        assert shown["id"] == failed["id"]
        assert (shown["content"], shown["status"]) == ("4", "complete")
        assert (shown["version"], shown["version_count"]) == (2, 2)
        assert "error" not in shown
        version = await ws.next("message.version", lambda f: f["message"]["id"] == failed["id"])
        assert version["message"]["version"] == 2
    history = await live_client.get(f"/v1/sessions/{session_id}/messages", headers=room[0].headers)
    messages = history.json()["data"]["messages"]
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", "What is 2+2?"),
        ("assistant", "4"),
    ]


async def test_regenerate_keeps_every_version_and_select_switches_for_everyone(
    connect: Connect,
    room: tuple[TestUser, TestUser, str],
    fake_openrouter: FakeOpenRouter,
    live_client: httpx.AsyncClient,
) -> None:
    ada_ws, bob_ws, session_id = await joined_pair(connect, room)
    fake_openrouter.enqueue(Stream(["first"]), Stream(["second"]), Stream(["next turn"]))
    _, end = await ask(ada_ws, session_id, "Say something")
    answer_id = end["message"]["id"]

    again = await ada_ws.request(
        {"type": "regenerate", "session_id": session_id, "message_id": answer_id}
    )
    streamed = await collect_stream(bob_ws, again["stream_id"])
    assert streamed.end is not None and streamed.end["message"]["content"] == "second"

    switched = await bob_ws.request(
        {"type": "select_version", "session_id": session_id, "message_id": answer_id, "version": 1}
    )
    assert switched["message"]["content"] == "first" and switched["message"]["version"] == 1
    seen = await ada_ws.next(
        "message.version",
        lambda f: f["message"]["version"] == 1 and f["message"]["id"] == answer_id,
    )
    assert (seen["message"]["content"], seen["message"]["version_count"]) == ("first", 2)

    listed = await live_client.get(
        f"/v1/sessions/{session_id}/messages/{answer_id}/versions", headers=room[0].headers
    )
    assert [v["content"] for v in listed.json()["data"]["versions"]] == ["first", "second"]

    # The next turn reads the version shown.
    await ask(ada_ws, session_id, "And then?")
    request = fake_openrouter.chat_requests[-1].json
    assert request is not None
    assert {"role": "assistant", "content": "first"} in request["messages"]
    assert {"role": "assistant", "content": "second"} not in request["messages"]

    missing = await ada_ws.request(
        {"type": "select_version", "session_id": session_id, "message_id": answer_id, "version": 9}
    )
    assert missing["type"] == "error" and missing["code"] == "not_found"


async def test_an_edit_is_a_new_version_of_the_question_and_gets_a_new_answer(
    connect: Connect,
    room: tuple[TestUser, TestUser, str],
    fake_openrouter: FakeOpenRouter,
) -> None:
    ada_ws, bob_ws, session_id = await joined_pair(connect, room)
    fake_openrouter.enqueue(Stream(["Paris"]), Stream(["Rome"]))
    ack, end = await ask(ada_ws, session_id, "Capital of France?")
    question_id, answer_id = ack["message"]["id"], end["message"]["id"]

    edited = await ada_ws.request(
        {
            "type": "edit",
            "session_id": session_id,
            "message_id": question_id,
            "content": "Capital of Italy?",
        }
    )
    assert edited["message"]["content"] == "Capital of Italy?"
    assert (edited["message"]["version"], edited["message"]["version_count"]) == (2, 2)
    seen = await bob_ws.next("message.version", lambda f: f["message"]["id"] == question_id)
    assert seen["message"]["content"] == "Capital of Italy?"
    streamed = await collect_stream(bob_ws, edited["stream_id"])
    assert streamed.end is not None
    assert streamed.end["message"]["id"] == answer_id
    assert (streamed.end["message"]["content"], streamed.end["message"]["version"]) == ("Rome", 2)
    asked = fake_openrouter.chat_requests[-1].json
    assert asked is not None
    assert asked["messages"][-1] == {"role": "user", "content": "Capital of Italy?"}

    # Back to the first question: its answer follows.
    await bob_ws.request(
        {
            "type": "select_version",
            "session_id": session_id,
            "message_id": question_id,
            "version": 1,
        }
    )
    answer = await ada_ws.next(
        "message.version",
        lambda f: f["message"]["id"] == answer_id and f["message"]["version"] == 1,
    )
    assert answer["message"]["content"] == "Paris"

    # Only its author edits a question.
    refused = await bob_ws.request(
        {"type": "edit", "session_id": session_id, "message_id": question_id, "content": "x"}
    )
    assert refused["type"] == "error" and refused["code"] == "forbidden"


async def test_an_edit_cancels_the_answer_it_replaces(
    connect: Connect,
    room: tuple[TestUser, TestUser, str],
    fake_openrouter: FakeOpenRouter,
) -> None:
    ada_ws, bob_ws, session_id = await joined_pair(connect, room)
    fake_openrouter.enqueue(Hang(), Stream(["better"]))
    ack = await ada_ws.request({"type": "message", "session_id": session_id, "content": "slow"})
    await bob_ws.next("stream.start", lambda f: f["stream_id"] == ack["stream_id"])

    edited = await ada_ws.request(
        {
            "type": "edit",
            "session_id": session_id,
            "message_id": ack["message"]["id"],
            "content": "fast",
        }
    )
    old = await bob_ws.next("stream.end", lambda f: f["stream_id"] == ack["stream_id"])
    assert (old["finish_reason"], old["message"]) == ("cancelled", None)
    streamed = await collect_stream(bob_ws, edited["stream_id"])
    assert streamed.end is not None
    assert (streamed.end["message"]["content"], streamed.end["finish_reason"]) == (
        "better",
        "stop",
    )
