from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from openai import AsyncOpenAI

from server.config import Settings
from tests.conftest import LiveServer, make_settings
from tests.fakes.openrouter import FakeOpenRouter, fake_openrouter

__all__ = ["fake_openrouter"]

OpenAIFor = Callable[[str], AsyncOpenAI]


@pytest.fixture
def settings(database_url: str, fake_openrouter: FakeOpenRouter) -> Settings:
    """The app talks to the fake OpenRouter on loopback."""
    return make_settings(
        database_url,
        openrouter_api_key="sk-or-test",
        openrouter_base_url=fake_openrouter.base_url,
        llm_model="openai/gpt-4o-mini",
        llm_breaker_reset_s=0.3,
    )


@pytest.fixture
async def openai_for(live_server: LiveServer) -> AsyncIterator[OpenAIFor]:
    """The official ``openai`` package pointed at the live server, with a credential
    (an access token or an API key); no retries, so every request is the test's."""
    opened: list[AsyncOpenAI] = []

    def make(credential: str) -> AsyncOpenAI:
        client = AsyncOpenAI(
            base_url=live_server.http_url + "/v1", api_key=credential, max_retries=0, timeout=20
        )
        opened.append(client)
        return client

    yield make
    for client in opened:
        await client.close()
