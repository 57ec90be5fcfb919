"""Refresh families (races, absolute lifetime, revocation of their access tokens), the
login throttle (failures only, per account and address, known devices) and invitations
instead of adding strangers by email."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import update

from db.models import RefreshFamily
from db.types import utcnow
from server.app import create_app
from tests.conftest import TestUser, create_session, make_settings, register_user

# Refresh families --------------------------------------------------------------------------


async def _me(client: httpx.AsyncClient, access_token: str) -> int:
    client.cookies.clear()
    response = await client.get("/v1/me", headers={"Authorization": f"Bearer {access_token}"})
    return response.status_code


async def test_twenty_concurrent_refreshes_leave_no_live_successor(
    client: httpx.AsyncClient,
) -> None:
    user = await register_user(client)
    body = {"refresh_token": user.refresh_token}

    answers = await asyncio.gather(*(client.post("/v1/auth/refresh", json=body) for _ in range(20)))

    codes = sorted(answer.status_code for answer in answers)
    assert codes == [200] + [401] * 19, codes
    winner = next(answer.json()["data"] for answer in answers if answer.status_code == 200)
    # A loser saw the token reused and revoked the family: whatever order the winner's
    # successor was stored in, neither it nor the winner's access token works.
    after = await client.post("/v1/auth/refresh", json={"refresh_token": winner["refresh_token"]})
    assert after.status_code == 401
    assert await _me(client, winner["access_token"]) == 401
    assert await _me(client, user.access_token) == 401


async def test_pairs_of_racing_refreshes_never_leave_a_live_successor(
    client: httpx.AsyncClient,
) -> None:
    survivors = 0
    for _ in range(20):
        user = await register_user(client)
        body = {"refresh_token": user.refresh_token}
        answers = await asyncio.gather(
            client.post("/v1/auth/refresh", json=body), client.post("/v1/auth/refresh", json=body)
        )
        for answer in answers:
            if answer.status_code != 200:
                continue
            successor = answer.json()["data"]["refresh_token"]
            again = await client.post("/v1/auth/refresh", json={"refresh_token": successor})
            survivors += again.status_code == 200
    assert survivors == 0


async def test_a_family_ends_at_its_absolute_lifetime_however_often_it_rotates(
    client: httpx.AsyncClient, container: Any
) -> None:
    user = await register_user(client)
    first = await client.post("/v1/auth/refresh", json={"refresh_token": user.refresh_token})
    assert first.status_code == 200
    token = first.json()["data"]["refresh_token"]
    async with container.database.transaction() as session:
        await session.execute(
            update(RefreshFamily)
            .where(RefreshFamily.user_id == uuid.UUID(user.id))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )

    response = await client.post("/v1/auth/refresh", json={"refresh_token": token})

    assert response.status_code == 401


async def test_rotation_never_extends_the_refresh_cookie_past_the_familys_end(
    database_url: str,
) -> None:
    async with app_clients(
        database_url, refresh_family_max_age_s=120, refresh_token_ttl_s=3600
    ) as clients:
        client = clients("10.0.0.1")
        user = await register_user(client)
        response = await client.post(
            "/v1/auth/login", json={"email": user.email, "password": user.password}
        )
        ages = [_refresh_cookie_max_age(response)]
        for _ in range(2):
            token = response.json()["data"]["refresh_token"]
            response = await client.post("/v1/auth/refresh", json={"refresh_token": token})
            assert response.status_code == 200
            ages.append(_refresh_cookie_max_age(response))

    assert all(age <= 120 for age in ages), ages


def _refresh_cookie_max_age(response: httpx.Response) -> int:
    for header in response.headers.get_list("set-cookie"):
        if header.startswith("parley_refresh="):
            for part in header.split(";"):
                name, _, value = part.strip().partition("=")
                if name.lower() == "max-age":
                    return int(value)
    raise AssertionError(f"no refresh cookie in {response.headers}")


async def test_logout_of_one_family_revokes_its_access_tokens_and_spares_the_others(
    client: httpx.AsyncClient,
) -> None:
    user = await register_user(client)
    other = await client.post(
        "/v1/auth/login", json={"email": user.email, "password": user.password}
    )
    other_access = other.json()["data"]["access_token"]
    client.cookies.clear()

    response = await client.post(
        "/v1/auth/logout", json={"refresh_token": user.refresh_token}, headers=user.headers
    )

    assert response.status_code == 200
    assert await _me(client, user.access_token) == 401
    assert await _me(client, other_access) == 200


async def test_refresh_reuse_revokes_the_familys_access_tokens(client: httpx.AsyncClient) -> None:
    user = await register_user(client)
    first = await client.post("/v1/auth/refresh", json={"refresh_token": user.refresh_token})
    newest_access = first.json()["data"]["access_token"]

    reuse = await client.post("/v1/auth/refresh", json={"refresh_token": user.refresh_token})

    assert reuse.status_code == 401
    assert await _me(client, newest_access) == 401


# Login throttle ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def app_clients(
    database_url: str, **overrides: Any
) -> AsyncIterator[Callable[[str], httpx.AsyncClient]]:
    """One app; ``clients(ip)`` is an httpx client whose requests come from ``ip``,
    each with its own cookie jar (a device of its own)."""
    application = create_app(make_settings(database_url, **overrides))
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(application.router.lifespan_context(application))

        def clients(ip: str) -> httpx.AsyncClient:
            transport = httpx.ASGITransport(app=application, client=(ip, 40000))
            client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
            stack.push_async_callback(client.aclose)
            return client

        yield clients


async def _login(client: httpx.AsyncClient, user: TestUser, password: str | None = None) -> int:
    body = {"email": user.email, "password": password or user.password}
    return (await client.post("/v1/auth/login", json=body)).status_code


async def test_successful_logins_from_one_address_are_not_counted(database_url: str) -> None:
    async with app_clients(
        database_url, login_attempts_per_window=3, login_ip_failures_per_window=3
    ) as clients:
        office = [clients("192.0.2.10") for _ in range(6)]
        users = [await register_user(client, f"Clerk{i}") for i, client in enumerate(office)]

        codes = [await _login(client, user) for client, user in zip(office, users, strict=True)]
        codes += [await _login(office[0], users[0]) for _ in range(6)]

    assert codes == [200] * 12


async def test_guessing_from_many_addresses_does_not_lock_the_owner_out_of_a_known_device(
    database_url: str,
) -> None:
    async with app_clients(
        database_url, login_attempts_per_window=2, login_account_failures_per_window=4
    ) as clients:
        laptop = clients("198.51.100.7")
        owner = await register_user(laptop, "Owner")  # this login marks the laptop
        first = clients("203.0.113.1")
        assert [await _login(first, owner, "guess") for _ in range(3)] == [401, 401, 429]
        second = clients("203.0.113.2")
        # Four failures in all: the account is locked from here on...
        assert [await _login(second, owner, "guess") for _ in range(2)] == [401, 401]

        stranger = await _login(clients("203.0.113.9"), owner)
        on_the_laptop = await _login(laptop, owner)

    # ...for every device the account never signed in from...
    assert stranger == 429
    # ...but the owner's own device still gets in with the right password.
    assert on_the_laptop == 200


async def test_an_address_has_a_ceiling_over_all_accounts(database_url: str) -> None:
    async with app_clients(
        database_url, login_attempts_per_window=2, login_ip_failures_per_window=4
    ) as clients:
        setup = clients("192.0.2.1")
        users = [await register_user(setup, f"U{i}") for i in range(3)]
        noisy = clients("192.0.2.99")
        codes = [await _login(noisy, user, "guess") for user in users for _ in range(2)]
        after = await _login(noisy, users[0])
        elsewhere = await _login(clients("192.0.2.100"), users[0])

    assert codes[:4] == [401] * 4 and codes[4:] == [429, 429], codes
    assert after == 429
    assert elsewhere == 200


# Invitations ---------------------------------------------------------------------------------


async def test_adding_by_email_invites_with_one_answer_and_joins_only_on_accepting(
    client: httpx.AsyncClient,
) -> None:
    owner = await register_user(client, "Owner")
    guest = await register_user(client, "Guest")
    session_id = await create_session(client, owner, title="private")
    members = f"/v1/sessions/{session_id}/members"

    known = await client.post(members, json={"email": guest.email}, headers=owner.headers)
    unknown_address = guest.email.replace("guest", "nobody")
    unknown = await client.post(members, json={"email": unknown_address}, headers=owner.headers)

    assert known.status_code == unknown.status_code == 202
    assert {**known.json()["data"], "email": ""} == {**unknown.json()["data"], "email": ""}
    # Invited, not a member.
    assert (await client.get(f"/v1/sessions/{session_id}", headers=guest.headers)).status_code in (
        403,
        404,
    )
    invitations = (await client.get("/v1/me/invitations", headers=guest.headers)).json()["data"]
    [invitation] = invitations["invitations"]
    assert invitation["session_id"] == session_id
    assert invitation["session_title"] == "private"
    assert invitation["invited_by"] == "Owner"

    accepted = await client.post(
        f"/v1/me/invitations/{invitation['id']}/accept", headers=guest.headers
    )

    assert accepted.status_code == 200, accepted.text
    assert (
        await client.get(f"/v1/sessions/{session_id}", headers=guest.headers)
    ).status_code == 200
    left = (await client.get("/v1/me/invitations", headers=guest.headers)).json()["data"]
    assert left["invitations"] == []


async def test_a_declined_invitation_is_gone_and_only_the_invitee_can_answer_it(
    client: httpx.AsyncClient,
) -> None:
    owner = await register_user(client, "Owner")
    guest = await register_user(client, "Guest")
    session_id = await create_session(client, owner, title="private")
    await client.post(
        f"/v1/sessions/{session_id}/members", json={"email": guest.email}, headers=owner.headers
    )
    again = await client.post(
        f"/v1/sessions/{session_id}/members", json={"email": guest.email}, headers=owner.headers
    )
    assert again.status_code == 202
    [invitation] = (await client.get("/v1/me/invitations", headers=guest.headers)).json()["data"][
        "invitations"
    ]
    path = f"/v1/me/invitations/{invitation['id']}"

    by_owner = await client.post(f"{path}/accept", headers=owner.headers)
    declined = await client.post(f"{path}/decline", headers=guest.headers)
    twice = await client.post(f"{path}/accept", headers=guest.headers)

    assert by_owner.status_code == 404
    assert declined.status_code == 200
    assert twice.status_code == 404
    assert (await client.get(f"/v1/sessions/{session_id}", headers=guest.headers)).status_code in (
        403,
        404,
    )
