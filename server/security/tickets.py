"""Single-use WebSocket tickets, for clients that cannot send headers or cookies.

A ticket is redeemed exactly once: Redis ``GETDEL`` (or a dict ``pop`` on one node)
takes it atomically, so two handshakes racing with one ticket cannot both pass.
"""

from __future__ import annotations

import secrets
import time
from typing import Protocol

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from errors import Unavailable

TICKET_KEY_PREFIX = "parley:ws_ticket:"


class TicketStore(Protocol):
    async def issue(self, principal: dict[str, str], ttl_s: int) -> str: ...

    async def redeem(self, ticket: str) -> dict[str, str] | None: ...


class MemoryTicketStore:
    def __init__(self) -> None:
        self._tickets: dict[str, tuple[float, dict[str, str]]] = {}

    async def issue(self, principal: dict[str, str], ttl_s: int) -> str:
        self._evict_expired()
        ticket = secrets.token_urlsafe(24)
        self._tickets[ticket] = (time.monotonic() + ttl_s, principal)
        return ticket

    async def redeem(self, ticket: str) -> dict[str, str] | None:
        entry = self._tickets.pop(ticket, None)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def _evict_expired(self) -> None:
        now = time.monotonic()
        for ticket in [t for t, (deadline, _) in self._tickets.items() if deadline < now]:
            del self._tickets[ticket]


class RedisTicketStore:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def issue(self, principal: dict[str, str], ttl_s: int) -> str:
        ticket = secrets.token_urlsafe(24)
        try:
            await self._redis.set(TICKET_KEY_PREFIX + ticket, orjson.dumps(principal), ex=ttl_s)
        except RedisError as exc:
            raise Unavailable("ticket store unavailable") from exc
        return ticket

    async def redeem(self, ticket: str) -> dict[str, str] | None:
        try:
            raw = await self._redis.getdel(TICKET_KEY_PREFIX + ticket)
        except RedisError as exc:
            raise Unavailable("ticket store unavailable") from exc
        return orjson.loads(raw) if raw else None


def make_ticket_store(redis: Redis | None) -> TicketStore:
    """Redis when there are several nodes (a ticket issued on one is redeemed on any),
    else this process."""
    return RedisTicketStore(redis) if redis is not None else MemoryTicketStore()
