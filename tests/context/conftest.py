"""Context-layer fixtures: the app with setting overrides, and the loopback Tavily."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from server.app import create_app
from tests.conftest import make_settings
from tests.context.answers import Answers, StartAnswers, answers_factory
from tests.fakes.openrouter import FakeOpenRouter, fake_openrouter
from tests.fakes.tavily import FakeTavily, fake_tavily

__all__ = ["fake_openrouter", "fake_tavily"]  # fixtures for every test here

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


@pytest.fixture
def start_answers(
    database_url: str, fake_openrouter: FakeOpenRouter, fake_tavily: FakeTavily
) -> StartAnswers:
    return answers_factory(database_url, fake_openrouter, fake_tavily)


@pytest.fixture
async def answers(start_answers: StartAnswers) -> AsyncIterator[Answers]:
    async with start_answers() as started:
        yield started
