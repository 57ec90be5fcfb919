"""How many answers one user has running, over every node (``MAX_CONCURRENT_ANSWERS``).

A question that asks for an answer takes a slot before anything is stored; the
answer gives it back when it ends, however it ends. With Redis the slots are a sorted
set per user shared by every node, each slot carrying its own expiry, so that a node
that dies holding slots frees them after ``lifetime_s`` (the longest an answer may
run); without Redis they are counted in this process.

Redis failing is not a reason to refuse a question: the slot is then granted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Protocol

from realtime._redis import REDIS_ERRORS
from realtime.keys import DEFAULT_KEYS, Keys

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from server.config import Settings

# A slot outlives the longest answer by this much before it counts as lost (its node
# died holding it).
SLOT_MARGIN_S = 60.0

log = logging.getLogger("parley.assistant")

# Drop expired slots, then take one if fewer than the cap are held.
TAKE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
"""


class AnswerSlots(Protocol):
    async def take(self, user_id: str, token: str, cap: int) -> bool: ...

    async def give_back(self, user_id: str, token: str) -> None: ...


class MemoryAnswerSlots:
    def __init__(self) -> None:
        self._held: defaultdict[str, set[str]] = defaultdict(set)

    async def take(self, user_id: str, token: str, cap: int) -> bool:
        held = self._held[user_id]
        if len(held) >= cap:
            return False
        held.add(token)
        return True

    async def give_back(self, user_id: str, token: str) -> None:
        held = self._held.get(user_id)
        if held is not None:
            held.discard(token)
            if not held:
                del self._held[user_id]


class RedisAnswerSlots:
    def __init__(self, redis: Redis, *, lifetime_s: float, keys: Keys = DEFAULT_KEYS) -> None:
        self._redis = redis
        self._lifetime_ms = int(lifetime_s * 1000)
        self._keys = keys
        self._take = redis.register_script(TAKE)

    async def take(self, user_id: str, token: str, cap: int) -> bool:
        now = int(time.time() * 1000)
        try:
            taken = await self._take(
                keys=[self._keys.answers(user_id)],
                args=[now, now + self._lifetime_ms, cap, token, self._lifetime_ms],
            )
        except REDIS_ERRORS as exc:
            log.warning("answer slots unavailable, granting one: %s", exc)
            return True
        return bool(taken)

    async def give_back(self, user_id: str, token: str) -> None:
        try:
            await asyncio.shield(self._redis.zrem(self._keys.answers(user_id), token))
        except REDIS_ERRORS as exc:
            log.warning("giving an answer slot back failed (it expires): %s", exc)


def make_answer_slots(redis: Redis | None, settings: Settings) -> AnswerSlots:
    """Shared by every node through Redis, else this process' own count."""
    if redis is None:
        return MemoryAnswerSlots()
    return RedisAnswerSlots(redis, lifetime_s=settings.llm_total_timeout_s + SLOT_MARGIN_S)
