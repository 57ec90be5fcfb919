"""Caching search answers: the same question asked twice within the TTL costs one call.

A cache key is the normalised query plus the parameters that change the answer, so
that "Latest Python release?" and "  latest python RELEASE " share an entry. Values
are opaque bytes (the service stores orjson). Two implementations: in process memory
(bounded, least recently used out first) and Redis (``parley:search:{sha256}``).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from cachetools import TLRUCache

from errors import Unavailable

if TYPE_CHECKING:
    from redis.asyncio import Redis

REDIS_KEY_PREFIX = "parley:search:"
_EDGE_PUNCTUATION = "\"'`.,;:!?¿¡()[]{}<>-–—…"  # noqa: RUF001 - real dashes, on purpose


def normalise_query(query: str) -> str:
    """Lower case, runs of whitespace as one space, punctuation trimmed at both ends."""
    collapsed = re.sub(r"\s+", " ", query).strip().lower()
    return collapsed.strip(_EDGE_PUNCTUATION + " ")


def cache_key(query: str, **params: object) -> str:
    """A stable hex digest of the normalised query and the sorted parameters."""
    parts = [normalise_query(query)] + [f"{name}={params[name]}" for name in sorted(params)]
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


class SearchCache(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: int) -> None: ...


class MemorySearchCache:
    """A bounded LRU with a TTL per entry, for a single node."""

    def __init__(
        self, max_entries: int = 512, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        # Values are (ttl_s, bytes): each entry lives ttl_s from its set.
        self._entries: TLRUCache[str, tuple[int, bytes]] = TLRUCache(
            maxsize=max_entries, ttu=lambda _key, value, now: now + value[0], timer=clock
        )

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        return entry[1] if entry is not None else None

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        if ttl_s > 0:
            self._entries[key] = (ttl_s, value)


class RedisSearchCache:
    """Shared by every node; entries expire through Redis' own TTL."""

    def __init__(self, redis: Redis, *, prefix: str = REDIS_KEY_PREFIX) -> None:
        self._redis = redis
        self._prefix = prefix

    async def get(self, key: str) -> bytes | None:
        from redis.exceptions import RedisError

        try:
            value = await self._redis.get(self._prefix + key)
        except RedisError as exc:
            raise Unavailable("search cache is unavailable") from exc
        if value is None:
            return None
        return value if isinstance(value, bytes) else str(value).encode("utf-8")

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        from redis.exceptions import RedisError

        if ttl_s <= 0:
            return
        try:
            await self._redis.set(self._prefix + key, value, ex=ttl_s)
        except RedisError as exc:
            raise Unavailable("search cache is unavailable") from exc


def make_search_cache(redis: Redis | None, *, prefix: str = REDIS_KEY_PREFIX) -> SearchCache:
    """Redis when the nodes share one (one answer serves them all), else this process."""
    return RedisSearchCache(redis, prefix=prefix) if redis is not None else MemorySearchCache()
