"""Fixtures for the realtime storage tests: a real Redis under a key prefix of its own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from tests.private_redis import private_redis  # noqa: F401  (a fixture)
from tests.services import require_redis


@pytest.fixture
def redis_url() -> str:
    return require_redis()


@pytest.fixture
async def prefix(redis_url: str) -> AsyncIterator[str]:
    """A prefix no other test uses; its keys are deleted afterwards."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    client = Redis.from_url(redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{name}:*", count=500)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def admin(redis_url: str) -> AsyncIterator[Redis]:
    """A separate client for inspecting or disturbing what the code under test does."""
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()
