from __future__ import annotations

import uuid

import httpx

from memory.extraction import Candidate, MemoryChanges
from tests.conftest import register_user
from tests.context.conftest import container_of_app


async def remember(client: httpx.AsyncClient, user, content: str, kind: str = "fact") -> dict:
    response = await client.post(
        "/v1/me/memory", json={"content": content, "kind": kind}, headers=user.headers
    )
    assert response.status_code == 201, response.text
    return response.json()["data"]


async def items_of(client: httpx.AsyncClient, user) -> list[dict]:
    response = await client.get("/v1/me/memory", headers=user.headers)
    assert response.status_code == 200, response.text
    return response.json()["data"]["items"]


async def test_a_user_adds_lists_and_forgets_memory_items(client: httpx.AsyncClient) -> None:
    user = await register_user(client)

    first = await remember(client, user, "prefers answers in French", "preference")
    second = await remember(client, user, "works as a nurse in Leeds")

    assert set(first) == {"id", "kind", "content", "source", "created_at"}
    assert first["kind"] == "preference" and first["source"] == "user"
    assert [item["content"] for item in await items_of(client, user)] == [
        "prefers answers in French",
        "works as a nurse in Leeds",
    ]

    response = await client.delete(f"/v1/me/memory/{first['id']}", headers=user.headers)
    assert response.status_code == 200
    assert [item["id"] for item in await items_of(client, user)] == [second["id"]]


async def test_a_user_cannot_forget_another_users_item(client: httpx.AsyncClient) -> None:
    ada, bob = await register_user(client, "Ada"), await register_user(client, "Bob")
    item = await remember(client, ada, "lives in Oslo")

    response = await client.delete(f"/v1/me/memory/{item['id']}", headers=bob.headers)

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert [i["id"] for i in await items_of(client, ada)] == [item["id"]]
    assert await items_of(client, bob) == []


async def test_forgetting_an_unknown_or_malformed_id_is_not_found(
    client: httpx.AsyncClient,
) -> None:
    user = await register_user(client)

    unknown = await client.delete(f"/v1/me/memory/{uuid.uuid4()}", headers=user.headers)
    malformed = await client.delete("/v1/me/memory/not-an-id", headers=user.headers)

    assert unknown.status_code == malformed.status_code == 404


async def test_forget_all_removes_only_the_callers_items(client: httpx.AsyncClient) -> None:
    ada, bob = await register_user(client, "Ada"), await register_user(client, "Bob")
    await remember(client, ada, "likes tea")
    await remember(client, ada, "likes jazz", "preference")
    await remember(client, bob, "likes coffee")

    response = await client.delete("/v1/me/memory", headers=ada.headers)

    assert response.json()["data"] == {"removed": 2}
    assert await items_of(client, ada) == []
    assert [i["content"] for i in await items_of(client, bob)] == ["likes coffee"]


async def test_a_huge_memory_item_is_refused_and_nothing_is_stored(
    client: httpx.AsyncClient,
) -> None:
    user = await register_user(client)

    response = await client.post(
        "/v1/me/memory", json={"content": "x" * 5000}, headers=user.headers
    )

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"
    assert await items_of(client, user) == []


async def test_blank_content_or_an_unknown_kind_is_a_bad_request(
    client: httpx.AsyncClient,
) -> None:
    user = await register_user(client)

    blank = await client.post("/v1/me/memory", json={"content": "   "}, headers=user.headers)
    kind = await client.post(
        "/v1/me/memory", json={"content": "ok", "kind": "secret"}, headers=user.headers
    )

    assert blank.status_code == kind.status_code == 400
    assert await items_of(client, user) == []


async def test_memory_needs_credentials(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/me/memory")

    assert response.status_code == 401


async def test_the_prompts_view_of_memory_follows_every_change(
    client: httpx.AsyncClient,
) -> None:
    user = await register_user(client)
    memory = container_of_app(client).memory
    user_id = uuid.UUID(user.id)
    assert await memory.context_items(user_id) == []  # now cached as empty

    item = await remember(client, user, "prefers short answers", "preference")
    assert await memory.context_items(user_id) == ["(preference) prefers short answers"]

    await client.delete(f"/v1/me/memory/{item['id']}", headers=user.headers)
    assert await memory.context_items(user_id) == []


async def test_learned_items_are_stored_but_never_overwrite_what_the_user_wrote(
    client: httpx.AsyncClient,
) -> None:
    user = await register_user(client)
    memory = container_of_app(client).memory
    user_id = uuid.UUID(user.id)
    typed = await remember(client, user, "prefers Python", "preference")
    await memory.context_items(user_id)

    applied = await memory.apply_changes(
        user_id,
        MemoryChanges(
            add=[Candidate("fact", "lives in Paris")],
            replace=[(typed["id"], Candidate("preference", "prefers Rust"))],
        ),
    )

    assert applied == 1
    items = await items_of(client, user)
    assert [(i["content"], i["source"]) for i in items] == [
        ("prefers Python", "user"),
        ("lives in Paris", "learned"),
    ]
    assert "(fact) lives in Paris" in await memory.context_items(user_id)
    known = await memory.known_items(user_id)
    assert [k.replaceable for k in known] == [False, True]


async def test_a_learned_item_can_be_replaced_by_a_later_guess(
    client: httpx.AsyncClient,
) -> None:
    user = await register_user(client)
    memory = container_of_app(client).memory
    user_id = uuid.UUID(user.id)
    await memory.apply_changes(user_id, MemoryChanges(add=[Candidate("fact", "lives in Oslo")]))
    [learned] = await memory.known_items(user_id)

    await memory.apply_changes(
        user_id, MemoryChanges(replace=[(learned.id, Candidate("fact", "lives in Bergen"))])
    )

    assert [(i["id"], i["content"]) for i in await items_of(client, user)] == [
        (learned.id, "lives in Bergen")
    ]
