"""Sessions: lifecycle, ownership, membership and the idle sweeper."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from db.models import ChatSession
from db.types import utcnow
from tests.conftest import create_session, register_user


async def _post(client: httpx.AsyncClient, user: Any, session_id: str, content: str) -> None:
    response = await client.post(
        f"/v1/sessions/{session_id}/messages",
        json={"content": content, "reply": "none"},
        headers=user.headers,
    )
    assert response.status_code == 201, response.text


async def test_a_created_session_belongs_to_its_creator(client: httpx.AsyncClient) -> None:
    user = await register_user(client)

    response = await client.post(
        "/v1/sessions",
        json={"title": "Plans", "model": "openai/gpt-4o-mini", "system_prompt": "Be brief."},
        headers=user.headers,
    )

    assert response.status_code == 201
    data = response.json()["data"]
    assert data["owner_id"] == user.id
    assert data["status"] == "active"
    assert data["title"] == "Plans"
    assert data["last_seq"] == 0
    got = await client.get(f"/v1/sessions/{data['id']}", headers=user.headers)
    assert got.json()["data"]["members"] == [{"user_id": user.id, "name": "Ada", "role": "owner"}]


async def test_sessions_are_listed_by_status(client: httpx.AsyncClient) -> None:
    user = await register_user(client)
    open_id = await create_session(client, user, title="open")
    closed_id = await create_session(client, user, title="closed")
    await client.post(f"/v1/sessions/{closed_id}/close", headers=user.headers)

    async def ids(status: str) -> list[str]:
        response = await client.get(f"/v1/sessions?status={status}", headers=user.headers)
        assert response.status_code == 200
        return [s["id"] for s in response.json()["data"]["sessions"]]

    assert await ids("active") == [open_id]
    assert await ids("closed") == [closed_id]
    assert await ids("expired") == []
    assert set(await ids("all")) == {open_id, closed_id}
    bad = await client.get("/v1/sessions?status=bogus", headers=user.headers)
    assert bad.status_code == 400


async def test_the_owner_can_patch_a_session(client: httpx.AsyncClient) -> None:
    user = await register_user(client)
    session_id = await create_session(client, user, title="old")

    response = await client.patch(
        f"/v1/sessions/{session_id}", json={"title": "new"}, headers=user.headers
    )

    assert response.status_code == 200
    assert response.json()["data"]["title"] == "new"


async def test_a_closed_session_refuses_messages_until_restored_with_its_history(
    client: httpx.AsyncClient,
) -> None:
    user = await register_user(client)
    session_id = await create_session(client, user)
    await _post(client, user, session_id, "before closing")

    closed = await client.post(f"/v1/sessions/{session_id}/close", headers=user.headers)
    refused = await client.post(
        f"/v1/sessions/{session_id}/messages",
        json={"content": "while closed", "reply": "none"},
        headers=user.headers,
    )
    restored = await client.post(f"/v1/sessions/{session_id}/restore", headers=user.headers)

    assert closed.json()["data"]["status"] == "closed"
    assert closed.json()["data"]["closed_at"] is not None
    assert refused.status_code == 409
    data = restored.json()["data"]
    assert restored.status_code == 200
    assert data["status"] == "active"
    assert data["summary"] is None
    assert [m["content"] for m in data["messages"]] == ["before closing"]


async def test_the_owner_adds_and_removes_a_member(client: httpx.AsyncClient) -> None:
    owner = await register_user(client, "Owner")
    guest = await register_user(client, "Guest")
    session_id = await create_session(client, owner)

    added = await client.post(
        f"/v1/sessions/{session_id}/members", json={"user_id": guest.id}, headers=owner.headers
    )
    guest_view = await client.get(f"/v1/sessions/{session_id}", headers=guest.headers)
    twice = await client.post(
        f"/v1/sessions/{session_id}/members", json={"user_id": guest.id}, headers=owner.headers
    )
    removed = await client.delete(
        f"/v1/sessions/{session_id}/members/{guest.id}", headers=owner.headers
    )
    after = await client.get(f"/v1/sessions/{session_id}", headers=guest.headers)

    assert added.status_code == 201
    assert added.json()["data"] == {"user_id": guest.id, "name": "Guest", "role": "member"}
    assert guest_view.status_code == 200
    assert twice.status_code == 409
    assert removed.json()["data"] == {"removed": True}
    assert after.status_code == 404


async def test_a_member_who_is_not_the_owner_cannot_manage_members(
    client: httpx.AsyncClient,
) -> None:
    owner = await register_user(client, "Owner")
    guest = await register_user(client, "Guest")
    third = await register_user(client, "Third")
    session_id = await create_session(client, owner)
    await client.post(
        f"/v1/sessions/{session_id}/members", json={"user_id": guest.id}, headers=owner.headers
    )

    add = await client.post(
        f"/v1/sessions/{session_id}/members", json={"user_id": third.id}, headers=guest.headers
    )
    remove = await client.delete(
        f"/v1/sessions/{session_id}/members/{owner.id}", headers=guest.headers
    )
    patch = await client.patch(
        f"/v1/sessions/{session_id}", json={"title": "mine now"}, headers=guest.headers
    )

    assert add.status_code == 403
    assert remove.status_code == 403
    assert patch.status_code == 403
    assert add.json()["error"]["code"] == "forbidden"


async def test_the_owner_cannot_be_removed(client: httpx.AsyncClient) -> None:
    owner = await register_user(client)
    session_id = await create_session(client, owner)

    response = await client.delete(
        f"/v1/sessions/{session_id}/members/{owner.id}", headers=owner.headers
    )

    assert response.status_code == 409


async def test_a_stranger_gets_not_found_for_someone_elses_session(
    client: httpx.AsyncClient,
) -> None:
    owner = await register_user(client, "Owner")
    stranger = await register_user(client, "Stranger")
    session_id = await create_session(client, owner)
    posted = await client.post(
        f"/v1/sessions/{session_id}/messages",
        json={"content": "for members only", "reply": "none"},
        headers=owner.headers,
    )
    assert posted.status_code == 201, posted.text
    missing_id = str(uuid.uuid4())

    for path in ("", "/messages", "/messages?after_seq=0", "/messages?before_seq=5"):
        theirs = await client.get(f"/v1/sessions/{session_id}{path}", headers=stranger.headers)
        nobodys = await client.get(f"/v1/sessions/{missing_id}{path}", headers=stranger.headers)
        assert theirs.status_code == nobodys.status_code == 404
        assert theirs.json()["error"]["message"] == nobodys.json()["error"]["message"]
    close = await client.post(f"/v1/sessions/{session_id}/close", headers=stranger.headers)
    assert close.status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "/v1/sessions/not-a-uuid",
        "/v1/sessions/12345/messages",
        "/v1/sessions/{sid}/messages/not-a-uuid",
        "/v1/sessions/{sid}/members/not-a-uuid",
    ],
)
async def test_a_malformed_id_is_not_found(client: httpx.AsyncClient, path: str) -> None:
    user = await register_user(client)
    session_id = await create_session(client, user)
    method = "DELETE" if "/messages/" in path or "/members/" in path else "GET"

    response = await client.request(method, path.format(sid=session_id), headers=user.headers)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def _age(container: Any, session_id: str, seconds: int) -> None:
    async with container.database.transaction() as db:
        await db.execute(
            update(ChatSession)
            .where(ChatSession.id == uuid.UUID(session_id))
            .values(last_activity_at=utcnow() - timedelta(seconds=seconds))
        )


async def _nobody(session_ids: Sequence[str]) -> set[str]:
    return set()


async def test_the_sweeper_expires_an_idle_session_and_activity_revives_it(
    client: httpx.AsyncClient, container: Any
) -> None:
    user = await register_user(client)
    idle_id = await create_session(client, user, title="idle")
    fresh_id = await create_session(client, user, title="fresh")
    await _age(container, idle_id, container.settings.session_idle_expiry_s + 60)

    expired = await container.sessions.expire_idle(_nobody)

    assert expired == 1
    idle = await client.get(f"/v1/sessions/{idle_id}", headers=user.headers)
    fresh = await client.get(f"/v1/sessions/{fresh_id}", headers=user.headers)
    assert idle.json()["data"]["status"] == "expired"
    assert fresh.json()["data"]["status"] == "active"
    await _post(client, user, idle_id, "I'm back")
    revived = await client.get(f"/v1/sessions/{idle_id}", headers=user.headers)
    assert revived.json()["data"]["status"] == "active"


async def test_the_sweeper_spares_an_idle_session_someone_is_present_in(
    client: httpx.AsyncClient, container: Any
) -> None:
    user = await register_user(client)
    session_id = await create_session(client, user)
    await _age(container, session_id, container.settings.session_idle_expiry_s + 60)
    asked: list[str] = []

    async def occupied(session_ids: Sequence[str]) -> set[str]:
        asked.extend(session_ids)
        return {session_id}

    expired = await container.sessions.expire_idle(occupied)

    assert expired == 0
    assert session_id in asked
    response = await client.get(f"/v1/sessions/{session_id}", headers=user.headers)
    assert response.json()["data"]["status"] == "active"
    # Presence counts as activity, so the next sweep does not even consider it.
    assert await container.sessions.expire_idle(_nobody) == 0


async def test_the_default_list_keeps_expired_sessions_most_recent_first(
    client: httpx.AsyncClient, container: Any
) -> None:
    user = await register_user(client)
    idle_id = await create_session(client, user, title="idle")
    recent_id = await create_session(client, user, title="recent")
    closed_id = await create_session(client, user, title="closed")
    await client.post(f"/v1/sessions/{closed_id}/close", headers=user.headers)
    await _age(container, idle_id, container.settings.session_idle_expiry_s + 60)
    assert await container.sessions.expire_idle(_nobody) == 1

    listed = await client.get("/v1/sessions", headers=user.headers)
    explicit = await client.get("/v1/sessions?status=open", headers=user.headers)

    assert listed.status_code == 200
    sessions = listed.json()["data"]["sessions"]
    assert [(s["id"], s["status"]) for s in sessions] == [
        (recent_id, "active"),
        (idle_id, "expired"),
    ]
    assert explicit.json()["data"]["sessions"] == sessions
