from __future__ import annotations

import httpx

from tests.conftest import TestUser, create_session, register_user
from tests.ws.conftest import Connect


async def test_a_message_is_stored_acked_and_broadcast_to_every_member_with_the_sender(
    connect: Connect, room: tuple[TestUser, TestUser, str]
) -> None:
    ada, bob, session_id = room
    ada_ws, bob_ws = await connect(ada), await connect(bob)
    await ada_ws.request({"type": "join", "session_id": session_id})
    await bob_ws.request({"type": "join", "session_id": session_id})

    ack = await ada_ws.request(
        {"type": "message", "session_id": session_id, "content": "hello", "reply": "none"}
    )

    assert ack["type"] == "ack"
    assert ack["message"]["seq"] == 1
    assert ack["message"]["content"] == "hello"
    for client in (ada_ws, bob_ws):
        frame = await client.next("message")
        assert frame["session_id"] == session_id
        assert frame["message"]["id"] == ack["message"]["id"]


async def test_joined_lists_the_joiner_and_presence_fires_on_first_and_last_connection(
    connect: Connect, room: tuple[TestUser, TestUser, str]
) -> None:
    ada, bob, session_id = room
    ada_ws = await connect(ada)
    joined = await ada_ws.request({"type": "join", "session_id": session_id})
    assert joined["type"] == "joined"
    assert joined["last_seq"] == 0
    assert joined["streams"] == []
    assert [(m["user_id"], m["connections"]) for m in joined["members"]] == [(ada.id, 1)]

    bob_first, bob_second = await connect(bob), await connect(bob)
    await bob_first.request({"type": "join", "session_id": session_id})
    joined_again = await bob_second.request({"type": "join", "session_id": session_id})
    counts = {m["user_id"]: m["connections"] for m in joined_again["members"]}
    assert counts == {ada.id: 1, bob.id: 2}

    presence = await ada_ws.next("presence")
    assert (presence["user_id"], presence["name"], presence["state"]) == (bob.id, "Bob", "join")
    await bob_first.request({"type": "leave", "session_id": session_id})
    await bob_second.close()
    leave = await ada_ws.next("presence")
    assert (leave["user_id"], leave["state"]) == (bob.id, "leave")
    assert ada_ws.unread("presence") == []


async def test_typing_reaches_others_but_is_not_echoed_to_its_sender(
    connect: Connect, room: tuple[TestUser, TestUser, str]
) -> None:
    ada, bob, session_id = room
    ada_ws, bob_ws = await connect(ada), await connect(bob)
    await ada_ws.request({"type": "join", "session_id": session_id})
    await bob_ws.request({"type": "join", "session_id": session_id})

    ack = await ada_ws.request({"type": "typing", "session_id": session_id, "active": True})

    assert ack == {"type": "ack", "id": ack["id"]}
    typing = await bob_ws.next("typing")
    assert typing == {"type": "typing", "session_id": session_id, "user_id": ada.id, "active": True}
    pong = await ada_ws.request({"type": "ping"})
    assert pong["type"] == "pong"
    assert ada_ws.unread("typing") == []


async def test_a_session_the_user_is_not_a_member_of_is_not_found(
    connect: Connect, live_client: httpx.AsyncClient, room: tuple[TestUser, TestUser, str]
) -> None:
    _, _, session_id = room
    eve = await register_user(live_client, "Eve")
    eve_ws = await connect(eve)

    for frame in (
        {"type": "join", "session_id": session_id},
        {"type": "message", "session_id": session_id, "content": "hi"},
        {"type": "join", "session_id": "not-a-uuid"},
    ):
        reply = await eve_ws.request(frame)
        assert (reply["type"], reply["code"]) == ("error", "not_found")


async def test_a_retried_client_msg_id_stores_once_and_conflicts_on_other_content(
    connect: Connect, room: tuple[TestUser, TestUser, str]
) -> None:
    ada, bob, session_id = room
    ada_ws, bob_ws = await connect(ada), await connect(bob)
    await ada_ws.request({"type": "join", "session_id": session_id})
    await bob_ws.request({"type": "join", "session_id": session_id})
    frame = {
        "type": "message",
        "session_id": session_id,
        "content": "once",
        "client_msg_id": "k-1",
        "reply": "none",
    }

    first = await ada_ws.request(frame)
    again = await ada_ws.request(frame)
    conflict = await ada_ws.request({**frame, "content": "different"})

    assert again["message"] == first["message"]
    assert (conflict["type"], conflict["code"]) == ("error", "conflict")
    await bob_ws.next("message")
    marker = await ada_ws.request(
        {"type": "message", "session_id": session_id, "content": "next", "reply": "none"}
    )
    assert marker["message"]["seq"] == first["message"]["seq"] + 1
    following = await bob_ws.next("message")
    assert following["message"]["seq"] == marker["message"]["seq"]


async def test_join_with_since_seq_replays_what_was_missed(
    connect: Connect, room: tuple[TestUser, TestUser, str]
) -> None:
    ada, bob, session_id = room
    ada_ws = await connect(ada)
    await ada_ws.request({"type": "join", "session_id": session_id})
    for n in range(5):
        await ada_ws.request(
            {"type": "message", "session_id": session_id, "content": f"m{n}", "reply": "none"}
        )

    bob_ws = await connect(bob)
    joined = await bob_ws.request({"type": "join", "session_id": session_id, "since_seq": 2})

    assert joined["last_seq"] == 5
    assert [m["seq"] for m in joined["history"]] == [3, 4, 5]
    assert joined["recovered"] is True
    await ada_ws.request(
        {"type": "message", "session_id": session_id, "content": "live", "reply": "none"}
    )
    live = await bob_ws.next("message")
    assert live["message"]["seq"] == 6
    assert bob_ws.unread("message") == []


async def test_members_in_different_sessions_do_not_see_each_other(
    connect: Connect, live_client: httpx.AsyncClient, room: tuple[TestUser, TestUser, str]
) -> None:
    ada, bob, session_id = room
    other_session = await create_session(live_client, bob, title="bob alone")
    ada_ws, bob_ws = await connect(ada), await connect(bob)
    await ada_ws.request({"type": "join", "session_id": session_id})
    await bob_ws.request({"type": "join", "session_id": other_session})

    await bob_ws.request(
        {"type": "message", "session_id": other_session, "content": "private", "reply": "none"}
    )
    await bob_ws.next("message")
    await ada_ws.request({"type": "ping"})

    assert ada_ws.unread("message") == []
