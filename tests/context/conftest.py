"""Context-layer fixtures: the app with setting overrides, and the loopback Tavily."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from server.app import create_app
from tests.conftest import make_settings
from tests.fakes.tavily import fake_tavily  # noqa: F401  (the fixture)

AppClient = Callable[..., contextlib.AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def app_with(database_url: str) -> AppClient:
    """``async with app_with(max_document_bytes=2048) as client:`` — the real app on
    this test's database, built with the given setting overrides; the container is
    ``client.container``."""

    @contextlib.asynccontextmanager
    async def build(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        application = create_app(make_settings(database_url, **overrides))
        async with application.router.lifespan_context(application):
            transport = httpx.ASGITransport(app=application)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
                c.container = application.state.container  # type: ignore[attr-defined]
                yield c

    return build


def container_of_app(client: httpx.AsyncClient) -> Any:
    """The container behind the ``client`` fixture (its transport's app)."""
    transport = client._transport
    return transport.app.state.container  # type: ignore[attr-defined]
