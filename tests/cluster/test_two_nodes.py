from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.cluster.conftest import AnsweredRoom, Node, answered_room, joined, shared_room
from tests.fakes.openrouter import FakeOpenRouter, Stream, fake_openrouter
from tests.wsclient import WSClient

__all__ = ["fake_openrouter"]
pytestmark = pytest.mark.slow


async def test_members_on_two_nodes_see_messages_in_order_presence_and_typing(
    cluster: Callable[..., Any],
) -> None:
    node_a, node_b = await cluster("a"), await cluster("b")
    ada, bob, session_id = await shared_room(node_a, "cluster")
    ada_ws = await joined(node_a, ada, session_id)
    bob_ws = await joined(node_b, bob, session_id)
    try:
        joined_bob = await ada_ws.next("presence")
        assert (joined_bob["user_id"], joined_bob["state"]) == (bob.id, "join")

        async def send(client: WSClient, who: str, n: int) -> None:
            for i in range(n):
                await client.send(
                    {
                        "type": "message",
                        "session_id": session_id,
                        "content": f"{who}{i}",
                        "reply": "none",
                    }
                )

        await asyncio.gather(send(ada_ws, "a", 8), send(bob_ws, "b", 8))
        for client in (ada_ws, bob_ws):
            seqs = [(await client.next("message"))["message"]["seq"] for _ in range(16)]
            assert seqs == list(range(1, 17))

        await bob_ws.request({"type": "typing", "session_id": session_id, "active": True})
        typing = await ada_ws.next("typing")
        assert (typing["user_id"], typing["active"]) == (bob.id, True)
    finally:
        await ada_ws.close()
        await bob_ws.close()


async def test_a_killed_nodes_users_leave_presence_on_the_other_node(
    cluster: Callable[..., Any],
) -> None:
    node_a, node_b = await cluster("a"), await cluster("b")
    ada, bob, session_id = await shared_room(node_a, "cluster")
    ada_ws = await joined(node_a, ada, session_id)
    bob_ws = await joined(node_b, bob, session_id)
    try:
        await ada_ws.next("presence", lambda f: f["state"] == "join")

        node_b.kill()

        # PRESENCE_TTL_S is 3 here; the contract's default of 30 s works the same way.
        leave = await ada_ws.next("presence", lambda f: f["state"] == "leave", timeout=15)
        assert leave["user_id"] == bob.id
        again = await ada_ws.request({"type": "join", "session_id": session_id})
        assert [m["user_id"] for m in again["members"]] == [ada.id]
    finally:
        await ada_ws.close()
        await bob_ws.close()


async def long_answer_under_way(
    cluster: Callable[..., Any], fake: FakeOpenRouter, title: str
) -> tuple[AnsweredRoom, dict[str, Any]]:
    """Ada (node a) has asked; the answer streams to both nodes for about 10 s."""
    fake.default = Stream([f"w{i} " for i in range(500)], delay_s=0.02)
    room = await answered_room(cluster, fake, title)
    ack = await room.ada_ws.request(
        {"type": "message", "session_id": room.session_id, "content": "talk for a long time"}
    )
    return room, ack


async def test_cancel_from_another_node_stops_the_upstream_within_a_second(
    cluster: Callable[..., Any],
    fake_openrouter: FakeOpenRouter,
) -> None:
    room, ack = await long_answer_under_way(cluster, fake_openrouter, "cancel")
    session_id, ada_ws, bob_ws = room.session_id, room.ada_ws, room.bob_ws
    try:
        await bob_ws.next("stream.delta")

        started = asyncio.get_running_loop().time()
        reply = await bob_ws.request(
            {"type": "cancel", "session_id": session_id, "stream_id": ack["stream_id"]}
        )
        assert reply["type"] == "ack"
        assert await fake_openrouter.wait_disconnect(1.0)
        assert asyncio.get_running_loop().time() - started < 1.0
        end = await bob_ws.next("stream.end", timeout=5)
        assert end["finish_reason"] == "cancelled"
        assert end["message"]["status"] == "cancelled"
    finally:
        await ada_ws.close()
        await bob_ws.close()


async def test_a_killed_nodes_answer_is_ended_and_stored_by_the_other_node(
    cluster: Callable[..., Any],
    fake_openrouter: FakeOpenRouter,
) -> None:
    room, ack = await long_answer_under_way(cluster, fake_openrouter, "killed")
    session_id, ada_ws, bob_ws = room.session_id, room.ada_ws, room.bob_ws
    try:
        stream_id = ack["stream_id"]
        for _ in range(3):
            await bob_ws.next("stream.delta", lambda f: f["stream_id"] == stream_id)

        room.node_a.kill()

        # PRESENCE_TTL_S is 3 here: node a is found dead within about 3 s.
        end = await bob_ws.next("stream.end", lambda f: f["stream_id"] == stream_id, timeout=15)
        seen = "".join(f["text"] for f in bob_ws.seen if f["type"] == "stream.delta")
        rejoined = await bob_ws.request({"type": "join", "session_id": session_id})
    finally:
        await ada_ws.close()
        await bob_ws.close()

    assert end["finish_reason"] == "error"
    assert end["error"]["code"] == "unavailable"
    answer = end["message"]
    assert answer["status"] == "error" and answer["reply_to"] == ack["message"]["id"]
    # The log holds every delta before it is published: at least what Bob read.
    assert answer["content"].startswith(seen) and seen
    assert rejoined["streams"] == []
    async with httpx.AsyncClient(base_url=room.node_b.http_url) as http:
        response = await http.get(f"/v1/sessions/{session_id}/messages", headers=room.bob.headers)
    stored = response.json()["data"]["messages"]
    assert [m["id"] for m in stored] == [ack["message"]["id"], answer["id"]]
    assert stored[-1]["content"] == answer["content"]


async def metric(node: Node, name: str) -> float:
    async with httpx.AsyncClient() as http:
        text = (await http.get(node.http_url + "/metrics")).text
    values = [line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")]
    return float(values[0]) if values else 0.0


async def test_members_on_two_nodes_take_turns_and_every_answer_starts_from_the_copy(
    cluster: Callable[..., Any],
    fake_openrouter: FakeOpenRouter,
) -> None:
    # Each node's copy of recent turns hears the other node's questions and answers
    # over the bus, so no answer is asked twice (a copy that missed something would
    # be: its request dropped, the context read again).
    node_a, node_b, session_id, ada_ws, bob_ws, _ = await answered_room(
        cluster, fake_openrouter, "turns"
    )
    try:
        turns = [(ada_ws, "Ada one"), (bob_ws, "Bob one"), (ada_ws, "Ada two"), (bob_ws, "Bob two")]
        for asker, content in turns:
            frame = {"type": "message", "session_id": session_id, "content": content}
            ack = await asker.request(frame)
            for member in (ada_ws, bob_ws):
                end = await member.next("stream.end", timeout=10)
                assert end["stream_id"] == ack["stream_id"]

        asked = [r for r in fake_openrouter.chat_requests if (r.json or {}).get("stream")]
        last = [m["content"] for m in (asked[-1].json or {})["messages"] if m["role"] != "system"]
        assert last[::2] == ["Ada one", "Bob one", "Ada two", "Bob two"]
        assert len(asked) == 4
        assert await metric(node_a, "parley_context_rereads_total") == 0
        assert await metric(node_b, "parley_context_rereads_total") == 0
    finally:
        await ada_ws.close()
        await bob_ws.close()
