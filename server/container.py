"""Everything the lifespan builds and the handlers use, in one typed place.

Built only by ``server/bootstrap.py``, in dependency order; every service is a field
of its own type (no string-keyed extras).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
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
from server.services.api_keys import ApiKeyService
from server.services.budgets import BudgetService
from server.services.messages import MessageService
from server.services.sessions import SessionService
from server.services.versions import VersionService

if TYPE_CHECKING:
    import httpx
    from redis.asyncio import Redis

    from llm.resilience import ResilientProvider
    from rag.embeddings import EmbeddingsClient
    from rag.retrieval import Retriever
    from realtime.hub import Hub
    from realtime.presence import Presence
    from realtime.stream_log import StreamLog
    from search.service import WebSearch
    from server.assistant.context import ContextAssembler
    from server.assistant.generation import Assistant
    from server.rest.sse import SSEStreamer
    from server.services.documents import DocumentService
    from server.services.memory import MemoryService
    from server.ws.endpoint import _ConnectionCaps

# A readiness check beyond the database and Redis: "ok", or why not.
ReadinessProbe = Callable[[], str]

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
    api_keys: ApiKeyService
    # Token and money budgets, and the spend every model request adds to them.
    budgets: BudgetService
    redis: Redis | None
    # This process among the cluster's nodes (presence, stream ownership).
    node_id: str
    http: httpx.AsyncClient
    # Realtime: presence, the stream log and the hub over the bus.
    hub: Hub
    presence: Presence
    stream_log: StreamLog
    # Context: web search, per-user memory, documents and retrieval.
    web_search: WebSearch
    embeddings: EmbeddingsClient | None
    memory: MemoryService
    documents: DocumentService
    retriever: Retriever
    # The assistant: the provider, what it is given, and the runner of answers.
    llm: ResilientProvider
    context: ContextAssembler
    assistant: Assistant
    sse: SSEStreamer
    # Regenerate, edit, switch versions of a message.
    versions: VersionService
    ws_connection_caps: _ConnectionCaps
    readiness: dict[str, ReadinessProbe] = field(default_factory=dict)
    # The readiness checks still running, by name (``server.rest.health._probe``).
    readiness_in_flight: dict[str, asyncio.Task[Any]] = field(default_factory=dict)
    message_limit: Limit = field(default_factory=lambda: Limit("message", 20, 10))
    typing_limit: Limit = field(default_factory=lambda: Limit("typing", 10, 5))
    join_limit: Limit = field(default_factory=lambda: Limit("join", 30, 10))
    frame_limit: Limit = field(default_factory=lambda: Limit("frame", 120, 10))

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
