"""Starts the realtime layer: presence, stream log, bus and hub, memory or Redis."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

from realtime.hub import Hub
from realtime.keys import Keys
from realtime.presence import Presence, PresenceChange
from realtime.stream_log import StreamLog
from server.container import Container
from server.services.accounts import AccountService


class HubFanout:
    """Lets the message service publish stored messages without knowing the hub."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    async def message_stored(self, session_id: str, message: dict[str, Any]) -> None:
        await self._hub.publish_message(session_id, message)


CALLER_CHANGED = "caller_changed"


def connect_caller_cache(hub: Hub, accounts: AccountService) -> None:
    """Keep every node's caller cache honest: a change to a user's row (logout-all,
    disabling, ...) is published on the control channel, and each node drops its entry
    when the notice arrives (the node that made the change already has). While the bus
    is down the notice reaches no other node; their entries expire within
    ``CALLER_CACHE_TTL_S``."""
    callers = accounts.callers

    async def publish(user_id: uuid.UUID) -> None:
        await hub.send_control({"op": CALLER_CHANGED, "user_id": str(user_id)})

    def on_notice(action: dict[str, Any]) -> None:
        try:
            user_id = uuid.UUID(str(action.get("user_id")))
        except ValueError:
            # A notice we cannot read: forgetting every entry is always safe.
            callers.clear()
            return
        callers.drop(user_id)

    async def family_revoked(user_id: uuid.UUID, family_id: uuid.UUID) -> None:
        await hub.disconnect_user(str(user_id), 4401, "session revoked", family=str(family_id))

    hub.control_handlers[CALLER_CHANGED] = on_notice
    accounts.on_caller_changed = publish
    accounts.on_family_revoked = family_revoked


async def start_realtime(container: Container, stack: contextlib.AsyncExitStack) -> None:
    settings = container.settings
    node_id: str = container.extras["node_id"]
    hub_ref: dict[str, Hub] = {}

    async def on_reaped(changes: list[PresenceChange]) -> None:
        await hub_ref["hub"].publish_reaped(changes)

    presence: Presence
    stream_log: StreamLog
    if settings.redis_url:
        from realtime.bus_redis import RedisBus
        from realtime.presence_redis import RedisPresence
        from realtime.stream_log_redis import RedisStreamLog

        redis_url = settings.redis_url
        presence = RedisPresence(redis_url, node_id, on_reaped, ttl_s=settings.presence_ttl_s)
        stream_log = RedisStreamLog(redis_url, settings.stream_log_ttl_s, node_id=node_id)

        def bus_factory(on_message: Any, on_gap: Any) -> Any:
            return RedisBus(redis_url, on_message, on_gap)
    else:
        from realtime.bus_memory import MemoryBus
        from realtime.presence_memory import MemoryPresence
        from realtime.stream_log_memory import MemoryStreamLog

        presence = MemoryPresence()
        stream_log = MemoryStreamLog(settings.stream_log_ttl_s)

        def bus_factory(on_message: Any, on_gap: Any) -> Any:
            return MemoryBus(on_message, on_gap)

    hub = Hub(
        bus_factory=bus_factory,
        presence=presence,
        stream_log=stream_log,
        fetch_messages_after=container.sessions.messages_after,
        metrics=container.metrics,
        keys=Keys(),
    )
    hub_ref["hub"] = hub
    await hub.start()
    stack.push_async_callback(hub.close)
    if hasattr(stream_log, "close"):
        stack.push_async_callback(stream_log.close)
    container.extras.update(hub=hub, presence=presence, stream_log=stream_log)
    container.messages.fanout = HubFanout(hub)
    connect_caller_cache(hub, container.accounts)
    container.extras.setdefault("readiness", {})["bus"] = lambda: (
        "ok" if hub.bus.healthy else "bus disconnected"
    )
