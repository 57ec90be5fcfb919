"""``/v1/me/api-keys``: create (the secret once), list, revoke; stored hashed."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from db.models import ApiKey
from db.repositories import api_keys as keys_repo
from realtime.control import ControlOp
from tests.conftest import register_user


async def test_a_key_is_shown_once_listed_by_prefix_and_stored_as_its_hash(
    client: httpx.AsyncClient, app: object
) -> None:
    ada = await register_user(client, "Ada")

    created = await client.post("/v1/me/api-keys", json={"name": "laptop"}, headers=ada.headers)

    assert created.status_code == 201, created.text
    key = created.json()["data"]
    assert key["key"].startswith("pk_") and len(key["key"]) > 40
    assert key["key"].startswith(key["prefix"]) and key["name"] == "laptop"
    listed = (await client.get("/v1/me/api-keys", headers=ada.headers)).json()["data"]
    assert [k["id"] for k in listed["api_keys"]] == [key["id"]]
    assert "key" not in listed["api_keys"][0]
    assert listed["api_keys"][0]["last_used_at"] is None
    database = app.state.container.database  # type: ignore[attr-defined]
    async with database.read() as session:
        # The PostgreSQL database is shared by the whole run: other tests' keys are there.
        row = (
            await session.execute(select(ApiKey).where(ApiKey.id == uuid.UUID(key["id"])))
        ).scalar_one()
    assert row.key_hash == hashlib.sha256(key["key"].encode()).hexdigest()
    assert key["key"] not in (row.key_hash, row.prefix)


async def test_a_revoked_key_leaves_the_list_and_another_user_cannot_revoke_it(
    client: httpx.AsyncClient,
) -> None:
    ada = await register_user(client, "Ada")
    eve = await register_user(client, "Eve")
    key = (await client.post("/v1/me/api-keys", json={"name": "ci"}, headers=ada.headers)).json()[
        "data"
    ]

    by_eve = await client.delete(f"/v1/me/api-keys/{key['id']}", headers=eve.headers)
    revoked = await client.delete(f"/v1/me/api-keys/{key['id']}", headers=ada.headers)
    again = await client.delete(f"/v1/me/api-keys/{key['id']}", headers=ada.headers)

    assert by_eve.status_code == 404
    assert revoked.status_code == 200 and revoked.json()["data"] == {"revoked": True}
    assert again.status_code == 404
    listed = (await client.get("/v1/me/api-keys", headers=ada.headers)).json()["data"]
    assert listed["api_keys"] == []


async def test_keys_are_managed_with_a_session_token_only(client: httpx.AsyncClient) -> None:
    ada = await register_user(client, "Ada")
    key = (await client.post("/v1/me/api-keys", json={"name": "ide"}, headers=ada.headers)).json()[
        "data"
    ]["key"]

    client.cookies.clear()  # the login's jwt cookie would authenticate otherwise
    response = await client.get("/v1/me/api-keys", headers={"Authorization": f"Bearer {key}"})
    anonymous = await client.post("/v1/me/api-keys", json={"name": "x"})
    empty_name = await client.post("/v1/me/api-keys", json={"name": ""}, headers=ada.headers)

    assert response.status_code == 401
    assert anonymous.status_code == 401
    assert empty_name.status_code == 400


async def test_a_verified_key_is_read_once_and_a_revocation_stops_it_at_once(
    client: httpx.AsyncClient, app: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    container = app.state.container  # type: ignore[attr-defined]
    ada = await register_user(client, "Ada")
    made = [
        (await client.post("/v1/me/api-keys", json={"name": n}, headers=ada.headers)).json()["data"]
        for n in ("laptop", "ci")
    ]
    reads: list[str] = []
    original = keys_repo.find_live

    async def counted(session: Any, key_hash: str) -> Any:
        reads.append(key_hash)
        return await original(session, key_hash)

    monkeypatch.setattr(keys_repo, "find_live", counted)
    client.cookies.clear()  # the login's jwt cookie would authenticate otherwise
    laptop, ci = ({"Authorization": f"Bearer {k['key']}"} for k in made)

    served = [(await client.get("/v1/models", headers=laptop)).status_code for _ in range(3)]
    await client.get("/v1/models", headers=ci)
    # This node revokes "laptop": it is dropped here at once.
    revoked = await client.delete(f"/v1/me/api-keys/{made[0]['id']}", headers=ada.headers)
    after_revoke = await client.get("/v1/models", headers=laptop)
    # Another node revokes "ci" (the row, then the notice on the bus): dropped here too.
    async with container.database.transaction() as session:
        assert await keys_repo.revoke(session, uuid.UUID(ada.id), uuid.UUID(made[1]["id"]))
    await container.hub.send_control({"op": ControlOp.API_KEY_REVOKED, "key_id": made[1]["id"]})
    for _ in range(100):  # the notice comes back through the bus
        if not len(container.api_keys.verified):
            break
        await asyncio.sleep(0.01)
    after_notice = await client.get("/v1/models", headers=ci)

    assert (
        after_revoke.status_code,
        after_notice.status_code,
        len(container.api_keys.verified),
    ) == (401, 401, 0)
    assert served == [200, 200, 200]
    assert len(reads) == 4  # laptop once, ci once, then each once more after its revocation
    assert revoked.status_code == 200
    assert after_revoke.status_code == 401 and after_notice.status_code == 401
