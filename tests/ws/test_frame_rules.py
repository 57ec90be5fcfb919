"""Frame rules docs/protocol.md states, checked on the wire."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import LiveServer, TestUser
from tests.ws.conftest import Connect
from tests.wsclient import WSClient


@pytest.mark.storage_free
async def test_the_welcome_gives_the_heartbeat_as_whole_seconds(
    live_server: LiveServer, room: tuple[TestUser, TestUser, str]
) -> None:
    ada, _, _ = room
    client, welcome = await WSClient.connect(live_server.ws_url, ada.access_token)
    await client.close()

    assert welcome["heartbeat_s"] == 25
    assert isinstance(welcome["heartbeat_s"], int)


async def test_a_frame_without_an_id_gets_no_ack(
    connect: Connect, room: tuple[TestUser, TestUser, str]
) -> None:
    ada, _, session_id = room
    ws = await connect(ada)
    await ws.request({"type": "join", "session_id": session_id})

    await ws.send({"type": "typing", "session_id": session_id, "active": True})
    await ws.send({"type": "ping"})
    # Frames are handled in order (a ping at once): once these are answered, any reply
    # to the two frames above would have come.
    pong = await ws.request({"type": "ping"})
    ack = await ws.request({"type": "typing", "session_id": session_id, "active": False})

    assert (pong["type"], ack["type"]) == ("pong", "ack")
    assert ws.unread("ack") == []
    assert ws.unread("pong") == []


async def test_a_message_into_a_room_not_joined_is_refused_and_not_stored(
    connect: Connect, room: tuple[TestUser, TestUser, str], live_client: httpx.AsyncClient
) -> None:
    ada, _, session_id = room
    ws = await connect(ada)

    error = await ws.request(
        {"type": "message", "session_id": session_id, "content": "anyone there?"}
    )

    assert error["type"] == "error"
    assert error["code"] == "not_found"
    assert "join" in error["message"]
    page = await live_client.get(f"/v1/sessions/{session_id}/messages", headers=ada.headers)
    assert page.json()["data"]["messages"] == []
