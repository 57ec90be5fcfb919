"""Each node caches callers; a revocation on one node reaches the others' caches over the
bus's control channel, long before their entries would expire."""

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
