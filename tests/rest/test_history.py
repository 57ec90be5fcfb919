"""History: keyset pages, soft delete with audit, idempotent posts."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from db.repositories import audit as audit_repo
from tests.conftest import TestUser as User
from tests.conftest import create_session, register_user


async def _fill(client: httpx.AsyncClient, user: User, session_id: str, count: int) -> None:
    for n in range(1, count + 1):
        response = await client.post(
            f"/v1/sessions/{session_id}/messages",
            json={"content": f"message {n}", "reply": "none"},
            headers=user.headers,
        )
        assert response.status_code == 201, response.text


async def _page(
    client: httpx.AsyncClient, user: User, session_id: str, query: str
) -> dict[str, Any]:
    response = await client.get(f"/v1/sessions/{session_id}/messages?{query}", headers=user.headers)
    assert response.status_code == 200, response.text
    return response.json()["data"]  # type: ignore[no-any-return]


def _seqs(page: dict[str, Any]) -> list[int]:
    return [m["seq"] for m in page["messages"]]


async def test_pages_walk_back_through_history_oldest_first_within_a_page(
    client: httpx.AsyncClient,
) -> None:
    user = await register_user(client)
    session_id = await create_session(client, user)
    await _fill(client, user, session_id, 7)

    newest = await _page(client, user, session_id, "limit=3")
    middle = await _page(
        client, user, session_id, f"limit=3&before_seq={newest['next_before_seq']}"
    )
    oldest = await _page(
        client, user, session_id, f"limit=3&before_seq={middle['next_before_seq']}"
    )

    assert _seqs(newest) == [5, 6, 7]
    assert newest["next_before_seq"] == 5
    assert _seqs(middle) == [2, 3, 4]
    assert _seqs(oldest) == [1]
    assert oldest["next_before_seq"] is None
    assert newest["messages"][-1]["content"] == "message 7"


async def test_a_page_that_reaches_the_first_message_has_no_next_cursor(
    client: httpx.AsyncClient,
) -> None:
    user = await register_user(client)
    session_id = await create_session(client, user)
    await _fill(client, user, session_id, 3)

    page = await _page(client, user, session_id, "limit=3")

    assert _seqs(page) == [1, 2, 3]
    assert page["next_before_seq"] is None


async def test_after_seq_reads_forward(client: httpx.AsyncClient) -> None:
    user = await register_user(client)
    session_id = await create_session(client, user)
    await _fill(client, user, session_id, 5)

    page = await _page(client, user, session_id, "after_seq=2&limit=2")

    assert _seqs(page) == [3, 4]


async def test_the_default_page_is_fifty_messages(
    client: httpx.AsyncClient, container: Any
) -> None:
    user = await register_user(client)
    session_id = await create_session(client, user)
    await _fill_directly(container, user, session_id, 60)

    page = await _page(client, user, session_id, "")

    assert _seqs(page) == list(range(11, 61))
    assert page["next_before_seq"] == 11


async def _fill_directly(container: Any, user: User, session_id: str, count: int) -> None:
    from db.repositories import messages as messages_repo

    async with container.database.transaction() as db:
        for n in range(count):
            await messages_repo.append_message(
                db,
                session_id=uuid.UUID(session_id),
                role="user",
                user_id=uuid.UUID(user.id),
                content=f"bulk {n}",
            )


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=201", "limit=-1", "limit=ten", "before_seq=3&after_seq=1"]
)
async def test_out_of_bounds_page_parameters_are_a_bad_request(
    client: httpx.AsyncClient, query: str
) -> None:
    user = await register_user(client)
    session_id = await create_session(client, user)

    response = await client.get(f"/v1/sessions/{session_id}/messages?{query}", headers=user.headers)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"


async def test_limit_two_hundred_is_allowed(client: httpx.AsyncClient) -> None:
    user = await register_user(client)
    session_id = await create_session(client, user)

    page = await _page(client, user, session_id, "limit=200")

    assert page == {"messages": [], "next_before_seq": None}


async def _posted(
    client: httpx.AsyncClient, user: User, session_id: str, content: str
) -> dict[str, Any]:
    response = await client.post(
        f"/v1/sessions/{session_id}/messages",
        json={"content": content, "reply": "none"},
        headers=user.headers,
    )
    assert response.status_code == 201, response.text
    return response.json()["data"]["message"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("deleter", ["author", "owner", "admin"])
async def test_a_message_is_soft_deleted_by_its_author_the_owner_or_an_admin_and_audited(
    client: httpx.AsyncClient, container: Any, deleter: str
) -> None:
    owner = await register_user(client, "Owner")
    author = await register_user(client, "Author")
    session_id = await create_session(client, owner)
    await client.post(
        f"/v1/sessions/{session_id}/members", json={"user_id": author.id}, headers=owner.headers
    )
    message = await _posted(client, author, session_id, "regrettable")
    actor = {"author": author, "owner": owner}.get(deleter)
    if actor is None:
        actor = await _admin(client, container, session_id, owner)

    response = await client.delete(
        f"/v1/sessions/{session_id}/messages/{message['id']}", headers=actor.headers
    )

    assert response.status_code == 200, response.text
    assert response.json()["data"]["deleted"] is True
    assert response.json()["data"]["content"] == ""
    page = await _page(client, owner, session_id, "")
    assert page["messages"][0]["deleted"] is True
    assert page["messages"][0]["seq"] == message["seq"]
    async with container.database.transaction() as db:
        entries = await audit_repo.entries_for(db, "message", message["id"])
    assert [(e.action, str(e.actor_id)) for e in entries] == [("message.delete", actor.id)]


async def _admin(client: httpx.AsyncClient, container: Any, session_id: str, owner: User) -> User:
    """An admin who is a member (members only see the session; admins may then delete)."""
    password = "admin password 1"
    email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
    user = await container.accounts.register(
        email=email, password=password, name="Admin", role="admin"
    )
    await client.post(
        f"/v1/sessions/{session_id}/members", json={"user_id": str(user.id)}, headers=owner.headers
    )
    login = await client.post("/v1/auth/login", json={"email": email, "password": password})
    data = login.json()["data"]
    return User(str(user.id), email, "Admin", password, data["access_token"], data["refresh_token"])


async def test_another_member_may_not_delete_someone_elses_message(
    client: httpx.AsyncClient,
) -> None:
    owner = await register_user(client, "Owner")
    other = await register_user(client, "Other")
    session_id = await create_session(client, owner)
    await client.post(
        f"/v1/sessions/{session_id}/members", json={"user_id": other.id}, headers=owner.headers
    )
    message = await _posted(client, owner, session_id, "mine")

    response = await client.delete(
        f"/v1/sessions/{session_id}/messages/{message['id']}", headers=other.headers
    )

    assert response.status_code == 403
    page = await _page(client, owner, session_id, "")
    assert page["messages"][0]["content"] == "mine"


async def test_deleting_an_unknown_message_is_not_found(client: httpx.AsyncClient) -> None:
    user = await register_user(client)
    session_id = await create_session(client, user)

    response = await client.delete(
        f"/v1/sessions/{session_id}/messages/{uuid.uuid4()}", headers=user.headers
    )

    assert response.status_code == 404


async def test_a_retried_post_with_the_same_client_msg_id_returns_the_same_message(
    client: httpx.AsyncClient,
) -> None:
    user = await register_user(client)
    session_id = await create_session(client, user)
    body = {"content": "exactly once", "client_msg_id": "c-1", "reply": "none"}
    url = f"/v1/sessions/{session_id}/messages"

    first = await client.post(url, json=body, headers=user.headers)
    retry = await client.post(url, json=body, headers=user.headers)

    assert first.status_code == 201
    assert retry.status_code == 200
    assert retry.json()["data"]["message"] == first.json()["data"]["message"]
    assert _seqs(await _page(client, user, session_id, "")) == [1]


async def test_reusing_a_client_msg_id_with_other_content_is_a_conflict(
    client: httpx.AsyncClient,
) -> None:
    user = await register_user(client)
    session_id = await create_session(client, user)
    url = f"/v1/sessions/{session_id}/messages"
    await client.post(
        url, json={"content": "one", "client_msg_id": "c-2", "reply": "none"}, headers=user.headers
    )

    response = await client.post(
        url, json={"content": "two", "client_msg_id": "c-2", "reply": "none"}, headers=user.headers
    )

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"


async def test_content_over_the_limit_is_a_bad_request(
    client: httpx.AsyncClient, container: Any
) -> None:
    user = await register_user(client)
    session_id = await create_session(client, user)
    limit = container.settings.max_content_chars

    response = await client.post(
        f"/v1/sessions/{session_id}/messages",
        json={"content": "x" * (limit + 1), "reply": "none"},
        headers=user.headers,
    )

    assert response.status_code == 400
