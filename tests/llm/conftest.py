from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from llm.openrouter import OpenRouterProvider
from tests.fakes.openrouter import FakeOpenRouter, fake_openrouter

__all__ = ["fake_openrouter"]

MakeProvider = Callable[..., OpenRouterProvider]


@pytest.fixture
async def http_client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def make_provider(fake_openrouter: FakeOpenRouter, http_client: httpx.AsyncClient) -> MakeProvider:
    def make(**timeouts: Any) -> OpenRouterProvider:
        return OpenRouterProvider(
            http_client,
            fake_openrouter.base_url,
            "sk-or-test",
            referer="https://parley.test",
            title="Parley tests",
            **timeouts,
        )

    return make
