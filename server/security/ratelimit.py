"""Rate limits through the ``limits`` library: in memory on one node, in Redis for many."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from redis.asyncio import ConnectionPool

from errors import RateLimited
from server.security.local_windows import LocalWindows


@dataclass(frozen=True)
class Limit:
    name: str
    amount: int
    per_seconds: int

    def item(self) -> RateLimitItem:
        return RateLimitItemPerSecond(self.amount, self.per_seconds, namespace="parley")


class RateLimiter:
    """A moving window per (limit, identity); ``hit`` raises ``RateLimited``."""

    def __init__(self, redis_url: str | None, pool: ConnectionPool | None = None) -> None:
        """``pool``: the app's Redis connections, so that closing its client at
        shutdown closes the limiter's too (``limits`` has no close of its own)."""
        self._storage: Storage
        if redis_url:
            scheme, rest = redis_url.split("://", 1)
            options: dict[str, Any] = {} if pool is None else {"connection_pool": pool}
            self._storage = RedisStorage(
                f"async+{scheme}://{rest}",
                implementation="redispy",
                key_prefix="parley:limits",
                wrap_exceptions=True,
                **options,
            )
        else:
            self._storage = MemoryStorage()
        self._limiter = MovingWindowRateLimiter(self._storage)
        # For limits on one connection (every frame it sends): in this process, never a
        # round trip to Redis on the path of each frame, and a few dozen bytes per
        # connection rather than ``limits``' lock and entries per key (local_windows.py).
        self._local = LocalWindows()
        self._items: dict[Limit, RateLimitItem] = {}

    async def hit(
        self, limit: Limit, identity: str, message: str | None = None, *, local: bool = False
    ) -> None:
        if local:
            wait = self._local.hit(limit.name, limit.amount, limit.per_seconds, identity)
            if wait is None:
                return
            raise RateLimited(message or "too many requests, slow down", retry_after=wait)
        item = self._items.get(limit) or self._items.setdefault(limit, limit.item())
        try:
            allowed = await self._limiter.hit(item, limit.name, identity)
            if allowed:
                return
            stats = await self._limiter.get_window_stats(item, limit.name, identity)
        except StorageError:
            # A limiter outage must not take the service down with it: fail open.
            return
        retry_after = max(0.0, stats.reset_time - time.time())
        raise RateLimited(message or "too many requests, slow down", retry_after=retry_after)

    async def check(self, limit: Limit, identity: str, message: str | None = None) -> None:
        """Raise ``RateLimited`` if the window is full, without taking a unit: for
        limits that count only some outcomes (``count`` them afterwards)."""
        item = self._items.get(limit) or self._items.setdefault(limit, limit.item())
        try:
            if await self._limiter.test(item, limit.name, identity):
                return
            stats = await self._limiter.get_window_stats(item, limit.name, identity)
        except StorageError:
            return  # fail open, as ``hit`` does
        retry_after = max(0.0, stats.reset_time - time.time())
        raise RateLimited(message or "too many requests, slow down", retry_after=retry_after)

    async def count(self, limit: Limit, identity: str) -> None:
        """Take a unit without refusing anything (the next ``check`` refuses)."""
        item = self._items.get(limit) or self._items.setdefault(limit, limit.item())
        try:
            await self._limiter.hit(item, limit.name, identity)
        except StorageError:
            return

    async def clear(self, limit: Limit, identity: str) -> None:
        item = self._items.get(limit) or self._items.setdefault(limit, limit.item())
        await self._limiter.clear(item, limit.name, identity)
