"""Each node caches callers and verified API keys; a revocation on one node reaches the
others' caches over the bus's control channel, long before their entries would expire."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.conftest import register_user

pytestmark = pytest.mark.slow


async def test_logout_all_on_one_node_revokes_the_token_on_another_at_once(
    cluster: Callable[..., Any],
) -> None:
    # An hour of TTL: only the control channel can explain node B refusing the token.
    node_a = await cluster("a", caller_cache_ttl_s="3600")
    node_b = await cluster("b", caller_cache_ttl_s="3600")
    async with (
        httpx.AsyncClient(base_url=node_a.http_url) as on_a,
        httpx.AsyncClient(base_url=node_b.http_url) as on_b,
    ):
        ada = await register_user(on_a, "Ada")
        for _ in range(2):  # the second one is answered from B's cache
            assert (await on_b.get("/v1/me", headers=ada.headers)).status_code == 200

        response = await on_a.post("/v1/auth/logout-all", headers=ada.headers)
        assert response.status_code == 200

        # The notice crosses Redis pub/sub after A answered; allow it that long.
        deadline = asyncio.get_running_loop().time() + 2.0
        while True:
            refused = await on_b.get("/v1/me", headers=ada.headers)
            if refused.status_code == 401 or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.02)
        assert refused.status_code == 401
        assert refused.json()["error"]["message"] == "token revoked"


async def test_an_api_key_revoked_on_one_node_stops_working_on_another_at_once(
    cluster: Callable[..., Any],
) -> None:
    # Node B keeps the key it verified for 30 s: only the control channel can explain
    # it refusing the key within two seconds.
    node_a = await cluster("a")
    node_b = await cluster("b")
    async with (
        httpx.AsyncClient(base_url=node_a.http_url) as on_a,
        httpx.AsyncClient(base_url=node_b.http_url) as on_b,
    ):
        ada = await register_user(on_a, "Ada")
        made = await on_a.post("/v1/me/api-keys", json={"name": "ide"}, headers=ada.headers)
        key = made.json()["data"]
        on_b.cookies.clear()
        with_key = {"Authorization": f"Bearer {key['key']}"}
        for _ in range(2):  # the second one is answered from B's verified keys
            assert (await on_b.get("/v1/models", headers=with_key)).status_code == 200

        revoked = await on_a.delete(f"/v1/me/api-keys/{key['id']}", headers=ada.headers)
        assert revoked.status_code == 200

        deadline = asyncio.get_running_loop().time() + 2.0
        while True:
            refused = await on_b.get("/v1/models", headers=with_key)
            if refused.status_code == 401 or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.02)
        assert refused.status_code == 401
