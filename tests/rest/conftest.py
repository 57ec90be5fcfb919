"""REST fixtures: the app built with setting overrides, and its container."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from server.app import create_app
from tests.conftest import make_settings

AppClient = Callable[..., contextlib.AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def client_with(database_url: str) -> AppClient:
    """``async with client_with(login_attempts_per_window=2) as client:`` — the real app
    on this test's database, built with the given setting overrides."""

    @contextlib.asynccontextmanager
    async def build(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        application = create_app(make_settings(database_url, **overrides))
        async with application.router.lifespan_context(application):
            transport = httpx.ASGITransport(app=application)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
                yield c

    return build


@pytest.fixture
def container(app: Starlette) -> Any:
    return app.state.container
