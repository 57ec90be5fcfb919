"""Memory or Redis: one small factory per realtime interface.

With a Redis URL every node shares presence, the stream log and the bus through that
Redis; without one they live in this process (one node, nothing to share). The
choice is made here, beside the interfaces, so that the composition root
(``server/bootstrap.py``) only says which URL it has.
"""

from __future__ import annotations

from collections.abc import Callable

from realtime.bus import Bus, GapHandler, MessageHandler
from realtime.presence import Presence
from realtime.stream_log import StreamLog

BusFactory = Callable[[MessageHandler, GapHandler], Bus]


def make_bus(redis_url: str | None) -> BusFactory:
    """What the hub calls, with its own handlers, to make its bus."""
    if redis_url:
        from realtime.bus_redis import RedisBus

        return lambda on_message, on_gap: RedisBus(redis_url, on_message, on_gap)
    from realtime.bus_memory import MemoryBus

    return MemoryBus


def make_presence(redis_url: str | None, node_id: str, *, ttl_s: float) -> Presence:
    """Without Redis, ``ttl_s`` does not apply: nothing outlives this process."""
    if redis_url:
        from realtime.presence_redis import RedisPresence

        return RedisPresence(redis_url, node_id, ttl_s=ttl_s)
    from realtime.presence_memory import MemoryPresence

    return MemoryPresence()


def make_stream_log(redis_url: str | None, node_id: str, *, ttl_s: float) -> StreamLog:
    if redis_url:
        from realtime.stream_log_redis import RedisStreamLog

        return RedisStreamLog(redis_url, ttl_s, node_id=node_id)
    from realtime.stream_log_memory import MemoryStreamLog

    return MemoryStreamLog(ttl_s)
