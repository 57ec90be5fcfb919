"""A per-user cache of what goes into the prompt about the user (memory items, …).

Reading the memory table on every turn is wasted work: it changes rarely, and only
through ``/v1/me/memory`` or extraction after a turn. Whoever changes it calls
``invalidate(user_id)``; the TTL only bounds how long a missed invalidation can
last. Values are opaque bytes (callers store orjson). Key in Redis:
``parley:user_context:{user_id}``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from errors import Unavailable

if TYPE_CHECKING:
    from redis.asyncio import Redis

REDIS_KEY_PREFIX = "parley:user_context:"
DEFAULT_TTL_S = 600


class UserContextCache(Protocol):
    async def get(self, user_id: str) -> bytes | None: ...

    async def set(self, user_id: str, value: bytes, ttl_s: int = DEFAULT_TTL_S) -> None: ...

    async def invalidate(self, user_id: str) -> None: ...


class MemoryUserContextCache:
    """Bounded, least recently used out first, for a single node."""

    def __init__(
        self, max_users: int = 10_000, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._max_users = max_users
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    async def get(self, user_id: str) -> bytes | None:
        entry = self._entries.get(user_id)
        if entry is None:
            return None
        if self._clock() >= entry[0]:
            del self._entries[user_id]
            return None
        self._entries.move_to_end(user_id)
        return entry[1]

    async def set(self, user_id: str, value: bytes, ttl_s: int = DEFAULT_TTL_S) -> None:
        self._entries[user_id] = (self._clock() + ttl_s, value)
        self._entries.move_to_end(user_id)
        while len(self._entries) > self._max_users:
            self._entries.popitem(last=False)

    async def invalidate(self, user_id: str) -> None:
        self._entries.pop(user_id, None)


class RedisUserContextCache:
    """Shared by every node, so an invalidation on one is seen by all."""

    def __init__(self, redis: Redis, *, prefix: str = REDIS_KEY_PREFIX) -> None:
        self._redis = redis
        self._prefix = prefix

    async def get(self, user_id: str) -> bytes | None:
        from redis.exceptions import RedisError

        try:
            value = await self._redis.get(self._prefix + user_id)
        except RedisError as exc:
            raise Unavailable("user context cache is unavailable") from exc
        if value is None:
            return None
        return value if isinstance(value, bytes) else str(value).encode("utf-8")

    async def set(self, user_id: str, value: bytes, ttl_s: int = DEFAULT_TTL_S) -> None:
        from redis.exceptions import RedisError

        try:
            await self._redis.set(self._prefix + user_id, value, ex=max(1, ttl_s))
        except RedisError as exc:
            raise Unavailable("user context cache is unavailable") from exc

    async def invalidate(self, user_id: str) -> None:
        from redis.exceptions import RedisError

        try:
            await self._redis.delete(self._prefix + user_id)
        except RedisError as exc:
            raise Unavailable("user context cache is unavailable") from exc


def make_user_context_cache(
    redis: Redis | None, *, prefix: str = REDIS_KEY_PREFIX
) -> UserContextCache:
    """Redis when the nodes share one (an invalidation reaches them all), else this
    process."""
    if redis is not None:
        return RedisUserContextCache(redis, prefix=prefix)
    return MemoryUserContextCache()
