"""The database out of reach, seen over REST and at the WebSocket handshake: 503
``unavailable`` with Retry-After, never a 500 or a hang; /readyz answers at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import LiveServer, make_settings, register_user
from tests.faults.postgres import (
    BOUND_S,
    outage_server,
    pg_proxy,
    proxied_settings,
    serving,
    through,
)
from tests.faults.tcp_proxy import TcpProxy

__all__ = ["outage_server", "pg_proxy", "proxied_settings"]


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) >= 1
    error = response.json()["error"]
    assert error["code"] == "unavailable"
    assert error["retry_after"] > 0


@pytest.mark.parametrize("fault", ["refuse", "blackhole"])
async def test_login_and_requests_are_unavailable_while_the_database_is_down(
    outage_server: LiveServer, pg_proxy: TcpProxy, fault: str
) -> None:
    async with httpx.AsyncClient(base_url=outage_server.http_url) as http:
        ada = await register_user(http, "Ada")
        if fault == "refuse":
            await pg_proxy.refuse()
        else:
            pg_proxy.blackhole()

        login = await asyncio.wait_for(
            http.post("/v1/auth/login", json={"email": ada.email, "password": ada.password}),
            BOUND_S,
        )
        assert_unavailable(login)
        create = await asyncio.wait_for(
            http.post("/v1/sessions", json={"title": "t"}, headers=ada.headers), BOUND_S
        )
        assert_unavailable(create)

        await pg_proxy.restore()
        again = await http.post("/v1/sessions", json={"title": "t"}, headers=ada.headers)
        assert again.status_code == 201, again.text


async def test_a_handshake_is_refused_with_503_while_the_database_is_down(
    outage_server: LiveServer, pg_proxy: TcpProxy
) -> None:
    async with httpx.AsyncClient(base_url=outage_server.http_url) as http:
        ada = await register_user(http, "Ada")
    await pg_proxy.refuse()

    with pytest.raises(InvalidStatus) as refused:
        await asyncio.wait_for(
            connect(outage_server.ws_url, additional_headers=ada.headers), BOUND_S
        )

    response = refused.value.response
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) >= 1


@pytest.fixture
async def default_server(postgres_database: str, pg_proxy: TcpProxy) -> AsyncIterator[LiveServer]:
    """Through the proxy with the default database timeouts (seconds, not one)."""
    settings = make_settings(through(pg_proxy, postgres_database))
    async with serving(settings, pg_proxy) as server:
        yield server


async def test_readyz_answers_503_at_once_in_a_partition(
    default_server: LiveServer, pg_proxy: TcpProxy
) -> None:
    async with httpx.AsyncClient(base_url=default_server.http_url) as http:
        assert (await http.get("/readyz")).status_code == 200
        pg_proxy.blackhole()

        # Three in a row: a check still waiting from the first must not hold the others.
        for _ in range(3):
            # A liveness bound: READINESS_TIMEOUT_S is 1 s; without it this hung for minutes.
            response = await asyncio.wait_for(http.get("/readyz"), 3.0)
            assert response.status_code == 503
            assert response.json()["data"]["checks"]["database"] != "ok"

        await pg_proxy.restore()
        for _ in range(50):
            if (await http.get("/readyz")).status_code == 200:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("/readyz stayed 503 after the database came back")
