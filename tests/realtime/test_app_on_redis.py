"""The whole app in-process on the real Redis: it starts, serves and closes cleanly."""

from __future__ import annotations

import gc

import httpx
import pytest

from server.app import create_app
from tests.conftest import make_settings, register_user
from tests.services import require_redis

pytestmark = pytest.mark.redis


async def test_a_stopped_app_leaves_no_redis_connection_open(database_url: str) -> None:
    app = create_app(make_settings(database_url, redis_url=require_redis()))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            user = await register_user(http, "Ada")  # rate-limited: the limiter's Redis
            me = await http.get("/v1/me", headers=user.headers)
            assert me.status_code == 200

    # An unclosed connection would surface here as a ResourceWarning, which this
    # suite's configuration turns into an error.
    gc.collect()
