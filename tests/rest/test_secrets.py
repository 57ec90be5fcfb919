"""What must not leak: secrets in the access log, why a credential failed, the
metrics to anyone, and a page's connections to any host."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import TEST_JWT_SECRET, LiveServer, TestUser, register_user
from tests.rest.conftest import AppClient


def _forge(user: TestUser, *, secret: str = TEST_JWT_SECRET, **claims: object) -> str:
    now = datetime.now(UTC)
    payload = {
        "sub": user.id,
        "iss": "parley",
        "aud": "parley",
        "iat": now,
        "exp": now + timedelta(minutes=5),
        "jti": uuid.uuid4().hex,
    }
    payload.update(claims)
    return jwt.encode(payload, secret, algorithm="HS256")


def _server_log(caplog: pytest.LogCaptureFixture) -> str:
    """What the server logged (this process also runs the clients, whose own debug
    logs hold the URLs they were given)."""
    return "\n".join(
        record.getMessage()
        for record in caplog.records
        if not record.name.startswith(("websockets", "httpx", "httpcore"))
    )


async def _refusal(url: str, **kwargs: object) -> tuple[int, dict[str, Any]]:
    """The status and the error envelope of a refused handshake."""
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, **kwargs):  # type: ignore[arg-type]
            pass
    response = refused.value.response
    return response.status_code, orjson.loads(response.body or b"{}")


@pytest.mark.storage_free
async def test_the_access_log_never_holds_a_ticket_or_token(
    live_server: LiveServer, live_client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    ada = await register_user(live_client, "Ada")
    issued = await live_client.post("/v1/auth/ws-ticket", headers=ada.headers)
    ticket = issued.json()["data"]["ticket"]
    caplog.set_level(logging.INFO)

    async with connect(f"{live_server.ws_url}?ticket={ticket}") as socket:
        await socket.recv()  # the welcome: the handshake was accepted and logged
    await _refusal(f"{live_server.ws_url}?ticket=unknown-ticket-secret")
    await live_client.get(f"/healthz?access_token={ada.access_token}&x=1")
    await live_client.get(f"/healthz?token={ada.refresh_token}")

    logged = _server_log(caplog)
    assert "/v1/ws?ticket=" in logged  # uvicorn did log the handshakes...
    for secret in (ticket, "unknown-ticket-secret", ada.access_token, ada.refresh_token):
        assert secret not in logged  # ...without what was in the query
    assert "x=1" in logged  # other parameters are kept


@pytest.mark.storage_free
async def test_refused_handshakes_do_not_say_why_the_token_failed(
    live_server: LiveServer, live_client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    ada = await register_user(live_client, "Ada")
    past = datetime.now(UTC) - timedelta(hours=1)
    credentials = {
        "expired": _forge(ada, iat=past - timedelta(minutes=5), exp=past),
        "bad-signature": _forge(ada, secret="another-secret-" + "y" * 40),
        "malformed": "not.a.token",
        "wrong-audience": _forge(ada, aud="someone-else"),
    }
    caplog.set_level(logging.INFO)
    answers = {}
    for name, token in credentials.items():
        status, body = await _refusal(
            live_server.ws_url, additional_headers={"Authorization": f"Bearer {token}"}
        )
        error = body["error"]
        answers[name] = (status, error["code"], error["message"], error["details"])
    status, body = await _refusal(f"{live_server.ws_url}?ticket=no-such-ticket")
    error = body["error"]
    answers["ticket"] = (status, error["code"], error["message"], error["details"])

    assert len(set(answers.values())) == 1, answers
    assert next(iter(answers.values()))[:2] == (401, "unauthorized")
    # The operator still learns why, without the credential itself.
    logged = _server_log(caplog)
    assert "expired" in logged
    for token in credentials.values():
        assert token not in logged


@pytest.mark.storage_free
async def test_metrics_are_public_by_default(client: httpx.AsyncClient) -> None:
    response = await client.get("/metrics")

    assert response.status_code == 200
    assert "parley_http_requests" in response.text


@pytest.mark.storage_free
async def test_metrics_token_guards_the_metrics(client_with: AppClient) -> None:
    async with client_with(metrics_token="scrape-" + "s" * 30) as client:
        anonymous = await client.get("/metrics")
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
        right = await client.get("/metrics", headers={"Authorization": "Bearer scrape-" + "s" * 30})

    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "unauthorized"
    assert wrong.status_code == 401
    assert right.status_code == 200
    assert "parley_http_requests" in right.text


@pytest.mark.storage_free
async def test_the_page_may_connect_only_to_its_own_origin(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")

    policy = response.headers["Content-Security-Policy"]
    directives = {d.split()[0]: d.split()[1:] for d in policy.split("; ")}
    assert directives["connect-src"] == ["'self'"]
