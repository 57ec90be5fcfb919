from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from errors import Unavailable
from search.cache import MemorySearchCache, RedisSearchCache
from tests.services import require_redis


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_memory_entries_expire_after_their_ttl() -> None:
    clock = Clock()
    cache = MemorySearchCache(clock=clock)
    await cache.set("k", b"v", ttl_s=10)

    clock.now += 9.9
    assert await cache.get("k") == b"v"
    clock.now += 0.1
    assert await cache.get("k") is None


async def test_memory_cache_evicts_the_least_recently_used_beyond_its_bound() -> None:
    cache = MemorySearchCache(max_entries=2)
    await cache.set("a", b"1", 60)
    await cache.set("b", b"2", 60)
    await cache.get("a")
    await cache.set("c", b"3", 60)

    assert await cache.get("b") is None
    assert await cache.get("a") == b"1"
    assert len(cache) == 2


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(require_redis())
    try:
        yield client
    finally:
        await client.aclose()


async def test_redis_cache_round_trips_with_a_ttl(redis: Redis) -> None:
    prefix = f"parley:test:{uuid.uuid4().hex}:search:"
    cache = RedisSearchCache(redis, prefix=prefix)
    try:
        await cache.set("k", b"value", ttl_s=30)
        assert await cache.get("k") == b"value"
        assert 0 < await redis.ttl(prefix + "k") <= 30
        assert await cache.get("missing") is None
    finally:
        await redis.delete(prefix + "k")


async def test_redis_cache_uses_the_documented_key_name(redis: Redis) -> None:
    key = f"test-{uuid.uuid4().hex}"
    try:
        await RedisSearchCache(redis).set(key, b"x", ttl_s=5)
        assert await redis.get(f"parley:search:{key}") == b"x"
    finally:
        await redis.delete(f"parley:search:{key}")


async def test_an_unreachable_redis_is_unavailable() -> None:
    client = Redis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=0.5)
    try:
        with pytest.raises(Unavailable):
            await RedisSearchCache(client).get("k")
    finally:
        await client.aclose()
