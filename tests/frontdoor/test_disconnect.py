"""A front-door caller closing its connection: the answer stops when nobody else is
in the room (``FRONTDOOR_ON_DISCONNECT=cancel_if_alone``, the default) and runs on
for the room when members are there. Either way what was produced is stored."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import LiveServer, TestUser
from tests.fakes.openrouter import FakeOpenRouter, Hang, Stream
from tests.stream.conftest import collect_stream
from tests.ws.conftest import Connect


async def _leave_after_first_text(
    client: httpx.AsyncClient, user: TestUser, session_id: str
) -> str:
    """Stream a completion, read up to the first text, then close the connection."""
    async with client.stream(
        "POST",
        "/v1/chat/completions",
        json={
            "model": "parley",
            "messages": [{"role": "user", "content": "go on"}],
            "stream": True,
        },
        headers={**user.headers, "X-Parley-Session": session_id},
    ) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                delta = orjson.loads(line[6:])["choices"][0]["delta"]
                if delta.get("content"):
                    return str(delta["content"])
    raise AssertionError("no text before the end")


async def _answer(client: httpx.AsyncClient, user: TestUser, session_id: str) -> dict[str, Any]:
    """The stored answer, once it is stored."""
    for _ in range(100):
        history = (
            await client.get(f"/v1/sessions/{session_id}/messages", headers=user.headers)
        ).json()["data"]["messages"]
        answers = [m for m in history if m["role"] == "assistant"]
        if answers:
            return answers[0]  # type: ignore[no-any-return]
        await asyncio.sleep(0.05)
    raise AssertionError("no answer stored")


async def test_leaving_an_answer_nobody_else_watches_stops_it_and_stores_the_part(
    live_client: httpx.AsyncClient,
    room: tuple[TestUser, TestUser, str],
    fake_openrouter: FakeOpenRouter,
) -> None:
    ada, _, session_id = room
    fake_openrouter.enqueue(Stream(["So far "], hang_after=True))

    first = await _leave_after_first_text(live_client, ada, session_id)

    assert first == "So far "
    assert await fake_openrouter.wait_disconnect(5.0)  # the upstream request was closed
    answer = await _answer(live_client, ada, session_id)
    assert answer["status"] == "cancelled"
    assert answer["content"] == "So far "


async def test_leaving_an_answer_members_watch_lets_it_finish_for_the_room(
    live_client: httpx.AsyncClient,
    room: tuple[TestUser, TestUser, str],
    fake_openrouter: FakeOpenRouter,
    connect: Connect,
) -> None:
    ada, bob, session_id = room
    bob_ws = await connect(bob)
    await bob_ws.request({"type": "join", "session_id": session_id})
    fake_openrouter.enqueue(Stream(["one ", "two ", "three ", "four"], delay_s=0.05))

    await _leave_after_first_text(live_client, ada, session_id)
    seen = await collect_stream(bob_ws)

    assert seen.end is not None and seen.end["finish_reason"] == "stop"
    assert seen.text == "one two three four"
    answer = await _answer(live_client, ada, session_id)
    assert (answer["status"], answer["content"]) == ("complete", "one two three four")


async def test_leaving_before_any_text_stops_the_answer_and_leaves_the_room(
    live_server: LiveServer,
    live_client: httpx.AsyncClient,
    room: tuple[TestUser, TestUser, str],
    fake_openrouter: FakeOpenRouter,
) -> None:
    # The response is held until the first text: the caller leaves while it is held.
    ada, _, session_id = room
    fake_openrouter.enqueue(Hang())
    body = {"model": "parley", "messages": [{"role": "user", "content": "hm?"}], "stream": True}

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(
            live_client.post(
                "/v1/chat/completions",
                json=body,
                headers={**ada.headers, "X-Parley-Session": session_id},
            ),
            0.5,
        )

    assert await fake_openrouter.wait_disconnect(5.0)  # the upstream request was closed
    hub_room = live_server.container.hub.rooms.get(session_id)
    for _ in range(100):
        if hub_room is None or not hub_room.connections:
            break
        await asyncio.sleep(0.02)
    assert hub_room is None or not hub_room.connections  # the listener left the room
