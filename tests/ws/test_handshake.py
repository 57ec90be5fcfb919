from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import TEST_JWT_SECRET, LiveServer, TestUser, register_user
from tests.ws.rawws import close_code
from tests.wsclient import WSClient


def forge(
    user: TestUser, *, secret: str = TEST_JWT_SECRET, algorithm: str = "HS256", **claims: object
) -> str:
    now = datetime.now(UTC)
    payload = {
        "sub": user.id,
        "iss": "parley",
        "aud": "parley",
        "iat": now,
        "nbf": now,
        "exp": now + timedelta(minutes=5),
        "jti": uuid.uuid4().hex,
        "role": "user",
    }
    payload.update(claims)
    return jwt.encode(payload, secret, algorithm=algorithm)


def unsigned(user: TestUser) -> str:
    header = jwt.utils.base64url_encode(b'{"alg":"none","typ":"JWT"}').decode()
    exp = int((datetime.now(UTC) + timedelta(minutes=5)).timestamp())
    body = jwt.utils.base64url_encode(
        f'{{"sub":"{user.id}","iss":"parley","aud":"parley","iat":1,"exp":{exp},'
        f'"jti":"x","role":"admin"}}'.encode()
    ).decode()
    return f"{header}.{body}."


async def refused(url: str, **kwargs: object) -> int:
    with pytest.raises(InvalidStatus) as refusal:
        async with connect(url, **kwargs):  # type: ignore[arg-type]
            pass
    return refusal.value.response.status_code


async def test_the_first_frame_is_a_welcome_naming_the_user(
    live_server: LiveServer, live_client: httpx.AsyncClient
) -> None:
    ada = await register_user(live_client, "Ada")
    client, welcome = await WSClient.connect(live_server.ws_url, ada.access_token)
    try:
        assert welcome["protocol"] == 1
        assert welcome["user"] == {"id": ada.id, "name": "Ada"}
        assert welcome["heartbeat_s"] == 25
        assert welcome["conn_id"]
        assert welcome["server_time"].endswith("Z")
    finally:
        await client.close()


@pytest.mark.parametrize(
    "credential",
    ["none", "garbage", "bad-signature", "alg-none", "expired", "wrong-audience", "wrong-issuer"],
)
async def test_bad_credentials_refuse_the_handshake_with_401(
    live_server: LiveServer, live_client: httpx.AsyncClient, credential: str
) -> None:
    ada = await register_user(live_client, "Ada")
    past = datetime.now(UTC) - timedelta(hours=1)
    tokens = {
        "garbage": "not.a.token",
        "bad-signature": forge(ada, secret="another-secret-" + "y" * 40),
        "alg-none": unsigned(ada),
        "expired": forge(ada, iat=past - timedelta(minutes=5), nbf=past, exp=past),
        "wrong-audience": forge(ada, aud="someone-else"),
        "wrong-issuer": forge(ada, iss="someone-else"),
    }
    headers = {} if credential == "none" else {"Authorization": f"Bearer {tokens[credential]}"}

    assert await refused(live_server.ws_url, additional_headers=headers) == 401


async def test_a_cookie_is_accepted_from_the_servers_own_origin_only(
    live_server: LiveServer, live_client: httpx.AsyncClient
) -> None:
    ada = await register_user(live_client, "Ada")
    cookie = {"Cookie": f"jwt={ada.access_token}"}

    foreign = {**cookie, "Origin": "https://evil.example"}
    assert await refused(live_server.ws_url, additional_headers=foreign) == 403
    assert await refused(live_server.ws_url, additional_headers=cookie) == 403

    own = {**cookie, "Origin": live_server.http_url}
    client, welcome = await WSClient.connect(live_server.ws_url, additional_headers=own)
    assert welcome["user"]["id"] == ada.id
    await client.close()


async def test_a_ticket_opens_one_connection_only(
    live_server: LiveServer, live_client: httpx.AsyncClient
) -> None:
    ada = await register_user(live_client, "Ada")
    response = await live_client.post("/v1/auth/ws-ticket", headers=ada.headers)
    ticket = response.json()["data"]["ticket"]
    assert response.json()["data"]["expires_in"] == 60

    client, welcome = await WSClient.connect(f"{live_server.ws_url}?ticket={ticket}")
    assert welcome["user"]["id"] == ada.id
    await client.close()

    assert await refused(f"{live_server.ws_url}?ticket={ticket}") == 401


async def test_a_refused_handshake_answers_with_the_error_envelope(
    live_server: LiveServer,
) -> None:
    async with httpx.AsyncClient() as plain:
        response = await plain.get(
            live_server.http_url + "/v1/ws",
            headers={
                "Connection": "Upgrade",
                "Upgrade": "websocket",
                "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            },
        )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    assert response.headers["x-request-id"]


async def test_a_refused_handshake_echoes_the_callers_request_id(live_server: LiveServer) -> None:
    # /v1/ws is served past the middleware stack (server/app.py): the endpoint sets the
    # request id itself, in the header and in the error body alike.
    async with httpx.AsyncClient() as plain:
        response = await plain.get(
            live_server.http_url + "/v1/ws",
            headers={
                "Connection": "Upgrade",
                "Upgrade": "websocket",
                "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                "X-Request-ID": "trace-me-1",
            },
        )
    assert response.status_code == 401
    assert response.headers["x-request-id"] == "trace-me-1"
    assert response.json()["error"]["request_id"] == "trace-me-1"


async def test_a_ticket_minted_before_logout_all_is_refused(
    live_server: LiveServer, live_client: httpx.AsyncClient
) -> None:
    ada = await register_user(live_client, "Ada")
    response = await live_client.post("/v1/auth/ws-ticket", headers=ada.headers)
    ticket = response.json()["data"]["ticket"]

    assert (await live_client.post("/v1/auth/logout-all", headers=ada.headers)).status_code == 200

    assert await refused(f"{live_server.ws_url}?ticket={ticket}") == 401


async def test_a_socket_opened_by_ticket_closes_with_4401_when_its_token_expires(
    live_server: LiveServer, live_client: httpx.AsyncClient
) -> None:
    ada = await register_user(live_client, "Ada")
    short, _ = live_server.container.accounts.tokens.issue_access_token(
        uuid.UUID(ada.id), role="user", name=ada.name, ttl_s=2
    )
    live_client.cookies.clear()
    response = await live_client.post(
        "/v1/auth/ws-ticket", headers={"Authorization": f"Bearer {short}"}
    )
    ticket = response.json()["data"]["ticket"]
    assert response.json()["data"]["expires_in"] <= 2

    client, _ = await WSClient.connect(f"{live_server.ws_url}?ticket={ticket}")
    try:
        assert await close_code(client, timeout=8) == 4401
    finally:
        await client.close()


async def _second_family(live_client: httpx.AsyncClient, user: TestUser) -> dict[str, str]:
    live_client.cookies.clear()
    response = await live_client.post(
        "/v1/auth/login", json={"email": user.email, "password": user.password}
    )
    assert response.status_code == 200, response.text
    return dict(response.json()["data"])


async def test_refresh_reuse_closes_that_familys_sockets_only(
    live_server: LiveServer, live_client: httpx.AsyncClient
) -> None:
    ada = await register_user(live_client, "Ada")
    other = await _second_family(live_client, ada)
    stolen, _ = await WSClient.connect(live_server.ws_url, ada.access_token)
    spared, _ = await WSClient.connect(live_server.ws_url, other["access_token"])
    try:
        live_client.cookies.clear()
        body = {"refresh_token": ada.refresh_token}
        assert (await live_client.post("/v1/auth/refresh", json=body)).status_code == 200
        reuse = await live_client.post("/v1/auth/refresh", json=body)
        assert reuse.status_code == 401

        assert await close_code(stolen) == 4401
        assert (await spared.request({"type": "ping"}))["type"] == "pong"
    finally:
        await stolen.close()
        await spared.close()


async def test_logout_of_one_family_closes_its_sockets_opened_by_token_or_ticket(
    live_server: LiveServer, live_client: httpx.AsyncClient
) -> None:
    ada = await register_user(live_client, "Ada")
    other = await _second_family(live_client, ada)
    live_client.cookies.clear()
    response = await live_client.post("/v1/auth/ws-ticket", headers=ada.headers)
    ticket = response.json()["data"]["ticket"]
    by_token, _ = await WSClient.connect(live_server.ws_url, ada.access_token)
    by_ticket, _ = await WSClient.connect(f"{live_server.ws_url}?ticket={ticket}")
    spared, _ = await WSClient.connect(live_server.ws_url, other["access_token"])
    try:
        response = await live_client.post(
            "/v1/auth/logout", json={"refresh_token": ada.refresh_token}, headers=ada.headers
        )
        assert response.status_code == 200, response.text

        assert await close_code(by_token) == 4401
        assert await close_code(by_ticket) == 4401
        assert (await spared.request({"type": "ping"}))["type"] == "pong"
    finally:
        for client in (by_token, by_ticket, spared):
            await client.close()
