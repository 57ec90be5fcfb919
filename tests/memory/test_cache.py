from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from memory.cache import MemoryUserContextCache, RedisUserContextCache
from tests.services import require_redis


async def test_memory_cache_returns_until_invalidated() -> None:
    cache = MemoryUserContextCache()
    await cache.set("u1", b"ctx")
    assert await cache.get("u1") == b"ctx"
    await cache.invalidate("u1")
    assert await cache.get("u1") is None


async def test_memory_cache_entries_expire() -> None:
    now = [0.0]
    cache = MemoryUserContextCache(clock=lambda: now[0])
    await cache.set("u1", b"ctx", ttl_s=5)
    now[0] = 5.0
    assert await cache.get("u1") is None


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(require_redis())
    try:
        yield client
    finally:
        await client.aclose()


async def test_redis_cache_uses_the_documented_key_and_invalidates(redis: Redis) -> None:
    user_id = f"test-{uuid.uuid4().hex}"
    cache = RedisUserContextCache(redis)
    try:
        await cache.set(user_id, b"ctx", ttl_s=30)
        assert await redis.get(f"parley:user_context:{user_id}") == b"ctx"
        assert await cache.get(user_id) == b"ctx"
        await cache.invalidate(user_id)
        assert await cache.get(user_id) is None
    finally:
        await redis.delete(f"parley:user_context:{user_id}")
