"""What a node does at start-up so that its first question does not wait for it."""

from __future__ import annotations

import asyncio

from llm import tokens
from server.app import create_app
from server.config import Settings
from tests.conftest import LiveServer
from tests.fakes.openrouter import FakeOpenRouter


async def test_a_starting_node_loads_the_tokenizer_and_fetches_the_model_catalogue(
    settings: Settings, fake_openrouter: FakeOpenRouter
) -> None:
    tokens.encoding.cache_clear()  # as in a fresh process
    server = LiveServer(create_app(settings))
    await server.start()
    try:
        assert tokens.encoding.cache_info().currsize == 1
        for _ in range(100):
            if any(r.path.endswith("/models") for r in fake_openrouter.requests):
                break
            await asyncio.sleep(0.01)
        assert [r.path for r in fake_openrouter.requests] == ["/api/v1/models"]
    finally:
        await server.stop()
