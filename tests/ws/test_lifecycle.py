"""A connection's life: token expiry and refresh (4401), logout everywhere, session
activity and the idle sweeper, removal from a session."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import httpx
from sqlalchemy import update

from db.models import User
from db.repositories import sessions as sessions_repo
from db.types import utcnow
from tests.conftest import LiveServer, TestUser, register_user
from tests.ws.conftest import Connect
from tests.ws.rawws import close_code
from tests.wsclient import WSClient


def short_token(server: LiveServer, user: TestUser, ttl_s: int) -> str:
    token, _ = server.container.accounts.tokens.issue_access_token(
        uuid.UUID(user.id), role="user", name=user.name, ttl_s=ttl_s
    )
    return str(token)


async def session_body(http: httpx.AsyncClient, user: TestUser, session_id: str) -> dict:
    response = await http.get(f"/v1/sessions/{session_id}", headers=user.headers)
    assert response.status_code == 200, response.text
    return dict(response.json()["data"])


# Tokens -----------------------------------------------------------------------------------


async def test_an_expiring_token_closes_with_4401_unless_refreshed_in_time(
    live_server: LiveServer, room: tuple[TestUser, TestUser, str]
) -> None:
    ada, _, _ = room
    expiring, _ = await WSClient.connect(live_server.ws_url, short_token(live_server, ada, 2))
    refreshed, _ = await WSClient.connect(live_server.ws_url, short_token(live_server, ada, 2))
    try:
        ack = await refreshed.request({"type": "refresh", "token": ada.access_token})
        assert ack["type"] == "ack"

        assert await close_code(expiring, timeout=6) == 4401

        pong = await refreshed.request({"type": "ping"})
        assert pong["type"] == "pong"
    finally:
        await expiring.close()
        await refreshed.close()


async def test_refresh_with_another_users_token_is_unauthorized_and_changes_nothing(
    connect: Connect, room: tuple[TestUser, TestUser, str]
) -> None:
    ada, bob, _ = room
    client = await connect(ada)
    for token in (bob.access_token, "not-a-jwt"):
        reply = await client.request({"type": "refresh", "token": token})
        assert (reply["type"], reply["code"]) == ("error", "unauthorized")
    assert (await client.request({"type": "ping"}))["type"] == "pong"


async def test_logout_everywhere_closes_the_users_connections_with_4401_only(
    connect: Connect, live_client: httpx.AsyncClient, room: tuple[TestUser, TestUser, str]
) -> None:
    ada, bob, _ = room
    ada_one, ada_two, bob_ws = await connect(ada), await connect(ada), await connect(bob)

    response = await live_client.post("/v1/auth/logout-all", headers=ada.headers)
    assert response.status_code == 200, response.text

    assert await close_code(ada_one) == 4401
    assert await close_code(ada_two) == 4401
    assert (await bob_ws.request({"type": "ping"}))["type"] == "pong"


async def test_a_disabled_users_connections_close_with_4403(
    connect: Connect,
    live_client: httpx.AsyncClient,
    live_server: LiveServer,
    room: tuple[TestUser, TestUser, str],
) -> None:
    ada, bob, _ = room
    async with live_server.container.database.transaction() as session:
        await session.execute(update(User).where(User.id == uuid.UUID(ada.id)).values(role="admin"))
    await live_server.container.accounts.caller_changed(uuid.UUID(ada.id))
    ada_ws, bob_ws = await connect(ada), await connect(bob)

    response = await live_client.patch(
        f"/v1/users/{bob.id}", json={"disabled": True}, headers=ada.headers
    )

    assert response.status_code == 200, response.text
    assert await close_code(bob_ws) == 4403
    assert (await ada_ws.request({"type": "ping"}))["type"] == "pong"


# Session activity ---------------------------------------------------------------------


async def test_joining_and_messages_count_as_session_activity(
    connect: Connect, live_client: httpx.AsyncClient, room: tuple[TestUser, TestUser, str]
) -> None:
    ada, _, session_id = room
    created = (await session_body(live_client, ada, session_id))["last_activity_at"]
    client = await connect(ada)

    await client.request({"type": "join", "session_id": session_id})
    joined = (await session_body(live_client, ada, session_id))["last_activity_at"]
    await client.request(
        {"type": "message", "session_id": session_id, "content": "hi", "reply": "none"}
    )
    messaged = (await session_body(live_client, ada, session_id))["last_activity_at"]

    assert created < joined < messaged


async def backdate(server: LiveServer, session_id: str) -> None:
    """Make the session look idle for an hour, as if the sweeper's cutoff had passed."""
    async with server.container.database.transaction() as db:
        await sessions_repo.touch_sessions(
            db, [uuid.UUID(session_id)], utcnow() - timedelta(hours=1)
        )


async def test_the_idle_sweeper_spares_an_occupied_session_and_expires_it_once_empty(
    live_server: LiveServer,
    connect: Connect,
    live_client: httpx.AsyncClient,
    room: tuple[TestUser, TestUser, str],
) -> None:
    ada, _, session_id = room
    sessions = live_server.container.sessions
    presence = live_server.container.presence
    client = await connect(ada)
    await client.request({"type": "join", "session_id": session_id})

    await backdate(live_server, session_id)
    await sessions.expire_idle(presence.occupied)
    body = await session_body(live_client, ada, session_id)
    assert body["status"] == "active"

    await client.request({"type": "leave", "session_id": session_id})
    await backdate(live_server, session_id)
    await sessions.expire_idle(presence.occupied)
    assert (await session_body(live_client, ada, session_id))["status"] == "expired"


# Membership ---------------------------------------------------------------------------


async def test_a_removed_member_is_taken_out_of_the_room_and_hears_nothing_more(
    connect: Connect, live_client: httpx.AsyncClient, room: tuple[TestUser, TestUser, str]
) -> None:
    ada, bob, session_id = room
    ada_ws, bob_ws = await connect(ada), await connect(bob)
    await ada_ws.request({"type": "join", "session_id": session_id})
    await bob_ws.request({"type": "join", "session_id": session_id})

    response = await live_client.delete(
        f"/v1/sessions/{session_id}/members/{bob.id}", headers=ada.headers
    )
    assert response.status_code in (200, 204), response.text

    left = await bob_ws.next("left")
    assert (left["session_id"], left["reason"]) == (session_id, "removed")
    leave = await ada_ws.next("presence", lambda f: f["state"] == "leave")
    assert leave["user_id"] == bob.id
    await ada_ws.request(
        {"type": "message", "session_id": session_id, "content": "after", "reply": "none"}
    )
    await ada_ws.next("message")
    assert (await bob_ws.request({"type": "ping"}))["type"] == "pong"
    assert bob_ws.unread("message") == []
    rejoin = await bob_ws.request({"type": "join", "session_id": session_id})
    assert (rejoin["type"], rejoin["code"]) == ("error", "not_found")


async def test_a_connection_that_closes_leaves_no_trace_in_the_hub(
    live_server: LiveServer, live_client: httpx.AsyncClient
) -> None:
    eve = await register_user(live_client, "Eve")
    hub = live_server.container.hub
    client, _ = await WSClient.connect(live_server.ws_url, eve.access_token)
    assert len(hub.connections) == 1
    await client.close()
    for _ in range(100):
        if not hub.connections:
            break
        await asyncio.sleep(0.02)
    assert hub.connections == {}
