"""The per-node caller cache: authentication without a database read, and every change
to a user that matters for authentication taking effect at once anyway."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from db.models import User
from db.repositories import users as users_repo
from server.app import create_app
from server.config import Settings
from server.security.callers import CallerCache
from tests.conftest import TestUser, make_settings, register_user
from tests.fakes.clock import FakeClock

LONG_TTL_S = 3600.0


@pytest.fixture
def settings(database_url: str) -> Settings:
    # Long enough that only an invalidation, never the expiry, can explain a change.
    return make_settings(database_url, caller_cache_ttl_s=LONG_TTL_S)


async def _disable_behind_the_services_back(container: Any, user_id: str) -> None:
    """What a direct database change looks like to the node: nobody tells the cache."""
    async with container.database.transaction() as session:
        assert await users_repo.set_disabled(session, uuid.UUID(user_id), True)


async def test_logout_all_revokes_an_old_token_at_once_despite_a_long_ttl(
    client: httpx.AsyncClient,
) -> None:
    user = await register_user(client)
    assert (await client.get("/v1/me", headers=user.headers)).status_code == 200

    response = await client.post("/v1/auth/logout-all", headers=user.headers)

    assert response.status_code == 200
    after = await client.get("/v1/me", headers=user.headers)
    assert after.status_code == 401
    assert after.json()["error"]["message"] == "token revoked"
    login = await client.post(
        "/v1/auth/login", json={"email": user.email, "password": user.password}
    )
    fresh = {"Authorization": f"Bearer {login.json()['data']['access_token']}"}
    assert (await client.get("/v1/me", headers=fresh)).status_code == 200


async def test_with_the_bus_down_a_revocation_still_takes_effect_on_this_node(
    client: httpx.AsyncClient, container: Any
) -> None:
    user = await register_user(client)
    assert (await client.get("/v1/me", headers=user.headers)).status_code == 200
    # No notice comes back over the bus: only the node's own drop can help.
    await container.hub.bus.close()

    response = await client.post("/v1/auth/logout-all", headers=user.headers)

    assert response.status_code == 200
    assert (await client.get("/v1/me", headers=user.headers)).status_code == 401


async def admin_of(client: httpx.AsyncClient, container: Any) -> TestUser:
    admin = await register_user(client, "Root")
    async with container.database.transaction() as session:
        await session.execute(
            update(User).where(User.id == uuid.UUID(admin.id)).values(role="admin")
        )
    return admin


async def test_an_admin_disabling_a_user_takes_effect_at_once_and_so_does_enabling(
    client: httpx.AsyncClient, container: Any
) -> None:
    admin, user = await admin_of(client, container), await register_user(client)
    assert (await client.get("/v1/me", headers=user.headers)).status_code == 200

    disabled = await client.patch(
        f"/v1/users/{user.id}", json={"disabled": True}, headers=admin.headers
    )

    assert disabled.status_code == 200, disabled.text
    assert disabled.json()["data"] == {"user_id": user.id, "disabled": True}
    refused = await client.get("/v1/me", headers=user.headers)
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == "account unavailable"
    enabled = await client.patch(
        f"/v1/users/{user.id}", json={"disabled": False}, headers=admin.headers
    )
    assert enabled.status_code == 200
    assert (await client.get("/v1/me", headers=user.headers)).status_code == 200


async def test_only_an_admin_disables_and_not_their_own_account(
    client: httpx.AsyncClient, container: Any
) -> None:
    admin, user = await admin_of(client, container), await register_user(client)

    by_user = await client.patch(
        f"/v1/users/{admin.id}", json={"disabled": True}, headers=user.headers
    )
    by_self = await client.patch(
        f"/v1/users/{admin.id}", json={"disabled": True}, headers=admin.headers
    )
    unknown = await client.patch(
        f"/v1/users/{uuid.uuid4()}", json={"disabled": True}, headers=admin.headers
    )

    assert (by_user.status_code, by_user.json()["error"]["code"]) == (403, "forbidden")
    assert (by_self.status_code, by_self.json()["error"]["code"]) == (409, "conflict")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "not_found")
    assert (await client.get("/v1/me", headers=admin.headers)).status_code == 200


async def test_within_the_ttl_authentication_is_served_from_the_cache(
    client: httpx.AsyncClient, container: Any
) -> None:
    user = await register_user(client)
    assert (await client.get("/v1/me", headers=user.headers)).status_code == 200

    # A change that bypasses AccountService is not seen until the entry expires: the
    # requests below are answered from what the first one read.
    await _disable_behind_the_services_back(container, user.id)

    for _ in range(3):
        assert (await client.get("/v1/me", headers=user.headers)).status_code == 200


async def test_a_second_request_does_not_read_the_caller_again(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = await register_user(client)
    reads: list[uuid.UUID] = []
    real_caller = users_repo.caller

    async def counting_caller(
        session: Any, user_id: uuid.UUID, *args: Any
    ) -> users_repo.Caller | None:
        reads.append(user_id)
        return await real_caller(session, user_id, *args)

    monkeypatch.setattr(users_repo, "caller", counting_caller)

    for _ in range(3):
        assert (await client.get("/v1/me", headers=user.headers)).status_code == 200

    assert reads == [uuid.UUID(user.id)]


async def test_a_zero_ttl_reads_the_database_on_every_request(database_url: str) -> None:
    application = create_app(make_settings(database_url, caller_cache_ttl_s=0))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            user = await register_user(client)
            assert (await client.get("/v1/me", headers=user.headers)).status_code == 200

            await _disable_behind_the_services_back(application.state.container, user.id)

            assert (await client.get("/v1/me", headers=user.headers)).status_code == 401


# The cache itself ---------------------------------------------------------------------


def _caller(name: str = "Ada") -> users_repo.Caller:
    return users_repo.Caller(name=name, role="user", disabled=False, revoked_before=None)


def test_an_entry_expires_after_the_ttl() -> None:
    clock = FakeClock()
    cache = CallerCache(5.0, clock=clock)
    user_id = uuid.uuid4()
    cache.put(user_id, _caller(), cache.generation)

    clock.now += 4.9
    assert cache.get(user_id) == _caller()
    clock.now += 0.2
    assert cache.get(user_id) is None
    assert len(cache) == 0


def test_the_least_recently_used_entry_goes_first_when_full() -> None:
    cache = CallerCache(60.0, max_entries=2)
    first, second, third = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    cache.put(first, _caller("first"), cache.generation)
    cache.put(second, _caller("second"), cache.generation)
    assert cache.get(first) is not None  # now the most recently used

    cache.put(third, _caller("third"), cache.generation)

    assert cache.get(second) is None
    assert cache.get(first) == _caller("first")
    assert cache.get(third) == _caller("third")


def test_a_read_that_raced_with_a_drop_is_not_cached() -> None:
    cache = CallerCache(60.0)
    user_id = uuid.uuid4()
    generation = cache.generation  # the read starts: the row it will get may be old
    cache.drop(user_id)  # the change commits and is announced meanwhile

    cache.put(user_id, _caller("before the change"), generation)

    assert cache.get(user_id) is None


def test_a_zero_ttl_caches_nothing() -> None:
    cache = CallerCache(0)
    user_id = uuid.uuid4()

    cache.put(user_id, _caller(), cache.generation)

    assert cache.get(user_id) is None
