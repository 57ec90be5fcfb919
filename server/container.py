"""Everything the lifespan builds and the handlers use, in one typed place."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import HTTPConnection

from db.engine import Database
from errors import Forbidden, Unauthorized
from server.config import Settings
from server.metrics import Metrics
from server.rest.http import bearer_or_cookie
from server.security.origins import origin_allowed
from server.security.ratelimit import Limit, RateLimiter
from server.services.accounts import AccountService, Principal
from server.services.messages import MessageService
from server.services.sessions import SessionService

if TYPE_CHECKING:
    from redis.asyncio import Redis

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass
class Container:
    settings: Settings
    database: Database
    metrics: Metrics
    limiter: RateLimiter
    accounts: AccountService
    sessions: SessionService
    messages: MessageService
    redis: Redis | None = None
    message_limit: Limit = field(default_factory=lambda: Limit("message", 20, 10))
    typing_limit: Limit = field(default_factory=lambda: Limit("typing", 10, 5))
    join_limit: Limit = field(default_factory=lambda: Limit("join", 30, 10))
    frame_limit: Limit = field(default_factory=lambda: Limit("frame", 120, 10))
    # Filled as the realtime, assistant and context layers start.
    extras: dict[str, Any] = field(default_factory=dict)

    async def authenticate(self, connection: HTTPConnection) -> Principal:
        """The caller of a REST request: Bearer header first, then the ``jwt`` cookie."""
        token, source = bearer_or_cookie(connection)
        if token is None:
            raise Unauthorized("credentials required: a Bearer token or the jwt cookie")
        if (
            source == "cookie"
            and connection.scope.get("method", "GET") not in SAFE_METHODS
            and connection.headers.get("origin") is not None
            and not origin_allowed(
                connection, self.settings.allowed_origins, self.settings.public_url
            )
        ):
            raise Forbidden("cross-site request refused")
        return await self.accounts.authenticate(token)


def container_of(connection: HTTPConnection) -> Container:
    return connection.app.state.container  # type: ignore[no-any-return]
