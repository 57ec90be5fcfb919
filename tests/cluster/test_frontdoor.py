"""The front door across nodes: a turn asked through one node's
``/v1/chat/completions`` reaches a member on the other node live, and a caller who
leaves does not stop an answer that a member on another node is watching."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.cluster.conftest import answered_room, joined, shared_room, upstream_of
from tests.fakes.openrouter import FakeOpenRouter, Stream, fake_openrouter
from tests.stream.conftest import collect_stream

__all__ = ["fake_openrouter"]
pytestmark = pytest.mark.slow


async def test_a_front_door_turn_on_one_node_streams_to_a_member_on_the_other(
    cluster: Callable[..., Any], fake_openrouter: FakeOpenRouter
) -> None:
    room = await answered_room(cluster, fake_openrouter, "front door")
    async with httpx.AsyncClient(base_url=room.node_a.http_url) as http:
        login = await http.post(
            "/v1/auth/login", json={"email": room.bob.email, "password": room.bob.password}
        )
    token = login.json()["data"]["access_token"]
    fake_openrouter.enqueue(Stream(["across ", "two ", "nodes"]))
    try:
        client = openai.AsyncOpenAI(
            base_url=room.node_a.http_url + "/v1", api_key=token, max_retries=0
        )
        async with client:
            stream = await client.chat.completions.create(
                model="parley",
                messages=[{"role": "user", "content": "from node a"}],
                stream=True,
                extra_headers={"X-Parley-Session": room.session_id},
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        question = await room.bob_ws.next("message")
        seen = await collect_stream(room.bob_ws)

        assert question["message"]["content"] == "from node a"
        assert text == seen.text == "across two nodes"
    finally:
        await room.ada_ws.close()
        await room.bob_ws.close()


async def test_leaving_the_front_door_keeps_an_answer_a_member_on_another_node_watches(
    cluster: Callable[..., Any], fake_openrouter: FakeOpenRouter
) -> None:
    upstream = upstream_of(fake_openrouter)
    node_a, node_b = await cluster("a", **upstream), await cluster("b", **upstream)
    ada, bob, session_id = await shared_room(node_a, "watched")
    bob_ws = await joined(node_b, bob, session_id)
    fake_openrouter.enqueue(Stream(["one ", "two ", "three ", "four"], delay_s=0.1))
    try:
        async with (
            httpx.AsyncClient(base_url=node_a.http_url, timeout=20) as http,
            http.stream(
                "POST",
                "/v1/chat/completions",
                json={
                    "model": "parley",
                    "stream": True,
                    "messages": [{"role": "user", "content": "count"}],
                },
                headers={**ada.headers, "X-Parley-Session": session_id},
            ) as response,
        ):
            async for line in response.aiter_lines():
                choices = orjson.loads(line[6:])["choices"] if line.startswith("data: {") else []
                if choices and choices[0]["delta"].get("content"):
                    break  # leave after the first text
        seen = await collect_stream(bob_ws)

        assert seen.end is not None and seen.end["finish_reason"] == "stop"
        assert seen.text == "one two three four"
    finally:
        await bob_ws.close()
