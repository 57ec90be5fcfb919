"""Registration, login, throttling, refresh rotation, logout and WebSocket tickets."""

from __future__ import annotations

import uuid

import httpx

from tests.conftest import register_user
from tests.rest.conftest import AppClient


async def test_a_registered_user_logs_in_and_reads_their_profile(
    client: httpx.AsyncClient,
) -> None:
    user = await register_user(client, "Grace")

    response = await client.get("/v1/me", headers=user.headers)

    assert response.status_code == 200
    me = response.json()["data"]
    assert me["id"] == user.id
    assert me["email"] == user.email
    assert me["name"] == "Grace"
    assert me["role"] == "user"


async def test_registering_a_new_and_a_taken_address_answers_alike(
    client: httpx.AsyncClient,
) -> None:
    address = f"linus-{uuid.uuid4().hex[:8]}@example.com"
    body = {"email": address.title(), "password": "long enough pw", "name": "Linus"}
    new = await client.post("/v1/auth/register", json=body)
    taken = await client.post(
        "/v1/auth/register", json={**body, "email": address.upper(), "password": "other pw!"}
    )

    assert new.status_code == taken.status_code == 201
    assert new.json() == taken.json()
    assert "token" not in new.text and "password" not in new.text.lower()
    # The account is the first registration's; the second changed nothing.
    login = {"email": address, "password": "long enough pw"}
    assert (await client.post("/v1/auth/login", json=login)).status_code == 200
    stolen = {"email": address, "password": "other pw!"}
    assert (await client.post("/v1/auth/login", json=stolen)).status_code == 401


async def test_a_wrong_password_is_unauthorized(client: httpx.AsyncClient) -> None:
    user = await register_user(client)

    response = await client.post(
        "/v1/auth/login", json={"email": user.email, "password": "not the password"}
    )

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_an_unknown_email_gets_the_same_answer_as_a_wrong_password(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/v1/auth/login", json={"email": "nobody@example.com", "password": "whatever pw"}
    )

    assert response.status_code == 401
    assert response.json()["error"]["message"] == "wrong email or password"


async def test_too_many_logins_are_throttled_with_retry_after(client_with: AppClient) -> None:
    async with client_with(login_attempts_per_window=2, login_window_s=60) as client:
        user = await register_user(client)  # a success: not counted
        wrong = {"email": user.email, "password": "wrong password"}
        assert (await client.post("/v1/auth/login", json=wrong)).status_code == 401
        assert (await client.post("/v1/auth/login", json=wrong)).status_code == 401

        response = await client.post("/v1/auth/login", json=wrong)

    assert response.status_code == 429
    error = response.json()["error"]
    assert error["code"] == "rate_limited"
    assert 0 < error["retry_after"] <= 60
    assert 1 <= int(response.headers["retry-after"]) <= 60


async def test_refresh_rotates_the_refresh_token(client: httpx.AsyncClient) -> None:
    user = await register_user(client)

    response = await client.post("/v1/auth/refresh", json={"refresh_token": user.refresh_token})

    assert response.status_code == 200
    data = response.json()["data"]
    assert data["refresh_token"] != user.refresh_token
    assert data["token_type"] == "Bearer"
    me = await client.get("/v1/me", headers={"Authorization": f"Bearer {data['access_token']}"})
    assert me.status_code == 200


async def test_reusing_a_refresh_token_revokes_its_whole_family(
    client: httpx.AsyncClient,
) -> None:
    user = await register_user(client)
    first = await client.post("/v1/auth/refresh", json={"refresh_token": user.refresh_token})
    newest = first.json()["data"]["refresh_token"]

    reuse = await client.post("/v1/auth/refresh", json={"refresh_token": user.refresh_token})
    after_reuse = await client.post("/v1/auth/refresh", json={"refresh_token": newest})

    assert reuse.status_code == 401
    assert "reuse" in reuse.json()["error"]["message"]
    assert after_reuse.status_code == 401


async def test_refresh_without_a_token_is_a_bad_request(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/auth/refresh")

    assert response.status_code == 400


async def test_refresh_accepts_the_refresh_cookie(client: httpx.AsyncClient) -> None:
    user = await register_user(client)

    client.cookies.clear()
    client.cookies.set("parley_refresh", user.refresh_token)

    response = await client.post("/v1/auth/refresh")

    assert response.status_code == 200


async def test_logout_revokes_the_refresh_family(client: httpx.AsyncClient) -> None:
    user = await register_user(client)

    response = await client.post(
        "/v1/auth/logout", json={"refresh_token": user.refresh_token}, headers=user.headers
    )
    refresh = await client.post("/v1/auth/refresh", json={"refresh_token": user.refresh_token})

    assert response.status_code == 200
    assert response.json()["data"] == {"logged_out": True}
    assert refresh.status_code == 401


async def test_logout_all_revokes_earlier_access_tokens_and_every_family(
    client: httpx.AsyncClient,
) -> None:
    user = await register_user(client)
    second_login = await client.post(
        "/v1/auth/login", json={"email": user.email, "password": user.password}
    )
    other_refresh = second_login.json()["data"]["refresh_token"]

    response = await client.post("/v1/auth/logout-all", headers=user.headers)

    assert response.status_code == 200
    assert (await client.get("/v1/me", headers=user.headers)).status_code == 401
    for token in (user.refresh_token, other_refresh):
        refreshed = await client.post("/v1/auth/refresh", json={"refresh_token": token})
        assert refreshed.status_code == 401


async def test_a_ws_ticket_comes_with_its_lifetime(client: httpx.AsyncClient) -> None:
    user = await register_user(client)

    response = await client.post("/v1/auth/ws-ticket", headers=user.headers)

    assert response.status_code == 200
    data = response.json()["data"]
    assert isinstance(data["ticket"], str) and len(data["ticket"]) >= 16
    assert data["expires_in"] == 60


async def test_login_sets_an_httponly_lax_jwt_cookie_that_authenticates(
    client: httpx.AsyncClient,
) -> None:
    user = await register_user(client)
    client.cookies.clear()

    response = await client.post(
        "/v1/auth/login", json={"email": user.email, "password": user.password}
    )

    cookies = response.headers.get_list("set-cookie")
    jwt_cookie = next(c for c in cookies if c.startswith("jwt="))
    assert "HttpOnly" in jwt_cookie
    assert "SameSite=lax" in jwt_cookie or "SameSite=Lax" in jwt_cookie
    assert "Secure" not in jwt_cookie  # plain http in tests
    assert any(c.startswith("parley_refresh=") and "HttpOnly" in c for c in cookies)
    token = response.json()["data"]["access_token"]
    client.cookies.clear()
    client.cookies.set("jwt", token)
    me = await client.get("/v1/me")
    assert me.status_code == 200
    assert me.json()["data"]["id"] == user.id


async def test_a_cookie_post_from_a_foreign_origin_is_refused(
    client: httpx.AsyncClient,
) -> None:
    user = await register_user(client)
    client.cookies.clear()
    client.cookies.set("jwt", user.access_token)

    response = await client.post(
        "/v1/sessions", json={}, headers={"Origin": "https://evil.example"}
    )

    assert response.status_code == 403


async def test_a_request_without_credentials_is_unauthorized(client: httpx.AsyncClient) -> None:
    client.cookies.clear()

    response = await client.get("/v1/me")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
