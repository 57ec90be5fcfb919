"""How services that sit below the hub reach it: through the callables they take.

``HubFanout`` publishes what the message service stored; ``CallerNotices`` keeps
every node's caller cache honest and closes revoked families' sockets. Both are made
in ``server/bootstrap.py`` after the hub and passed to the services' constructors.
"""

from __future__ import annotations

import uuid
from typing import Any

from realtime.close_codes import CloseCode
from realtime.control import ControlOp
from realtime.hub import Hub
from server.security.callers import CallerCache
from server.services.api_keys import VerifiedKeys


class HubFanout:
    """Lets the message service publish stored messages without knowing the hub."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    async def message_stored(self, session_id: str, message: dict[str, Any]) -> None:
        await self._hub.publish_message(session_id, message)


class CallerNotices:
    """A change to a user's row (logout-all, disabling, ...) is published on the
    control channel, and each node drops its cache entry when the notice arrives (the
    node that made the change already has). While the bus is down the notice reaches
    no other node; their entries expire within ``CALLER_CACHE_TTL_S``.

    Give ``caller_changed`` and ``family_revoked`` to ``AccountService``."""

    def __init__(self, hub: Hub, callers: CallerCache) -> None:
        self._hub = hub
        self._callers = callers
        hub.control_handlers[ControlOp.CALLER_CHANGED] = self._on_notice

    async def caller_changed(self, user_id: uuid.UUID) -> None:
        await self._hub.send_control({"op": ControlOp.CALLER_CHANGED, "user_id": str(user_id)})

    async def family_revoked(self, user_id: uuid.UUID, family_id: uuid.UUID) -> None:
        await self._hub.disconnect_user(
            str(user_id), CloseCode.TOKEN_EXPIRED, "session revoked", family=str(family_id)
        )

    def _on_notice(self, action: dict[str, Any]) -> None:
        try:
            user_id = uuid.UUID(str(action.get("user_id")))
        except ValueError:
            # A notice we cannot read: forgetting every entry is always safe.
            self._callers.clear()
            return
        self._callers.drop(user_id)


class ApiKeyNotices:
    """A revoked API key is announced on the control channel, and each node drops it
    from its verified keys when the notice arrives (the revoking node already has).
    While the bus is down, other nodes' entries expire within ``VERIFIED_TTL_S``.

    Give ``key_revoked`` to ``ApiKeyService``."""

    def __init__(self, hub: Hub, verified: VerifiedKeys) -> None:
        self._hub = hub
        self._verified = verified
        hub.control_handlers[ControlOp.API_KEY_REVOKED] = self._on_notice

    async def key_revoked(self, key_id: uuid.UUID) -> None:
        await self._hub.send_control({"op": ControlOp.API_KEY_REVOKED, "key_id": str(key_id)})

    def _on_notice(self, action: dict[str, Any]) -> None:
        try:
            key_id = uuid.UUID(str(action.get("key_id")))
        except ValueError:
            self._verified.clear()  # a notice we cannot read: forgetting all is safe
            return
        self._verified.drop(key_id)
