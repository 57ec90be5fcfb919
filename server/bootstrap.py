"""The composition root: builds every service from the settings, in dependency order,
each given its collaborators in its constructor, and tears them down in reverse.

The order: storage (database, Redis) -> sessions -> realtime (presence, stream log,
hub) -> accounts -> context (search, memory, documents, retrieval) -> the assistant
(provider, context assembler, answers) -> messages. The few real cycles (presence
needs the hub and the takeover, which need presence) are closed in one place,
``_bind_back_references``.

Which implementation serves each interface is picked by small factories beside the
interfaces: SQLite or PostgreSQL by ``DATABASE_URL`` (``db.engine``), memory or Redis
by ``REDIS_URL`` (``realtime.backends``, ``search.cache.make_search_cache``,
``memory.cache.make_user_context_cache``, ``server.security.tickets``), OpenRouter or
the offline model by ``OPENROUTER_API_KEY`` (``server.assistant.provider``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from db import migrate
from db.engine import Database
from errors import ParleyError
from llm import tokens
from llm.resilience import ResilientProvider
from memory.cache import make_user_context_cache
from rag.embeddings import EmbeddingsClient
from rag.retrieval import Retriever
from realtime.backends import make_bus, make_presence, make_stream_log
from realtime.hub import Hub
from realtime.keys import DEFAULT_KEYS, USER_CONTEXT_TTL_S, Keys
from realtime.presence import Presence
from realtime.stream_log import StreamLog
from search.cache import make_search_cache
from search.service import WebSearch
from search.tavily import TavilyClient
from server.assistant.answer_slots import make_answer_slots
from server.assistant.context import ContextAssembler, make_turn_cache
from server.assistant.generation import Assistant
from server.assistant.provider import make_provider
from server.assistant.takeover import StreamTakeover
from server.assistant.turn_cache import TurnCache, remember_stored_messages
from server.config import ConfigError, Settings
from server.container import Container, ReadinessProbe
from server.metrics import Metrics
from server.rest.sse import SSEStreamer
from server.security.callers import CallerCache
from server.security.ratelimit import Limit, RateLimiter
from server.security.tickets import make_ticket_store
from server.security.tokens import TokenService
from server.services.accounts import AccountService, LoginLimits
from server.services.api_keys import ApiKeyService, VerifiedKeys
from server.services.budgets import BudgetService
from server.services.documents import DocumentService
from server.services.hub_links import ApiKeyNotices, CallerNotices, HubFanout
from server.services.memory import MemoryService
from server.services.messages import MessageService
from server.services.sessions import SessionService
from server.services.versions import VersionService
from server.ws.endpoint import _ConnectionCaps

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("parley")
HTTP_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
DEV_SECRET_FILE = Path("parley.secret")


def resolve_jwt_secret(settings: Settings) -> str:
    """``JWT_SECRET``, or on the embedded default a generated one kept beside the database.

    Several nodes must share one secret, so PostgreSQL deployments have to set it.
    """
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value()
    if not settings.is_sqlite:
        raise ConfigError("invalid setting JWT_SECRET: required when DATABASE_URL is PostgreSQL")
    if DEV_SECRET_FILE.exists():
        return DEV_SECRET_FILE.read_text().strip()
    secret = secrets.token_urlsafe(48)
    DEV_SECRET_FILE.write_text(secret)
    os.chmod(DEV_SECRET_FILE, 0o600)
    log.warning("JWT_SECRET is not set: generated one in %s for this machine", DEV_SECRET_FILE)
    return secret


@contextlib.asynccontextmanager
async def build_container(settings: Settings, metrics: Metrics) -> AsyncIterator[Container]:
    """Every service, built in dependency order. The stack unwinds in reverse, so what
    is built later stops first: posts land, then running answers drain (their deltas
    still reach other nodes), then the provider, HTTP, the hub and the bus close, and
    the database last."""
    async with contextlib.AsyncExitStack() as stack:
        node_id = uuid.uuid4().hex[:12]
        database = await _open_database(settings, stack)
        budgets = BudgetService(database, settings, metrics)
        # Unwinds after the assistant drains (its answers record spend), before the
        # database is disposed.
        stack.push_async_callback(budgets.aclose)
        redis = _open_redis(settings, stack)
        # Refused configuration (PostgreSQL without JWT_SECRET) fails before any hub starts.
        jwt_secret = resolve_jwt_secret(settings)
        limiter = RateLimiter(settings.redis_url, redis.connection_pool if redis else None)
        turns = make_turn_cache(settings)
        sessions = SessionService(
            database,
            idle_expiry_s=settings.session_idle_expiry_s,
            allowed_models=settings.allowed_models,
            # A session that closes or loses a member: this node's copy of its turns
            # must not start an answer that the store will refuse.
            access_changed=turns.drop,
        )
        readiness: dict[str, ReadinessProbe] = {}
        hub, presence, stream_log = await _start_realtime(
            settings, node_id, database, sessions, turns, metrics, stack
        )
        readiness["bus"] = lambda: "ok" if hub.bus.healthy else "bus disconnected"
        accounts = _build_accounts(settings, jwt_secret, database, redis, limiter, hub)
        http = _open_http(settings, stack)
        context = _build_context(settings, database, redis, http, sessions, readiness)
        llm, assembler, assistant = await _start_assistant(
            settings, database, hub, turns, context, http, metrics, readiness, stack, budgets, redis
        )
        # Budget warnings reach the payer's connections on every node.
        budgets.notify = hub.send_to_user
        message_limit = Limit("message", settings.messages_per_window, settings.message_window_s)
        messages = MessageService(
            database,
            max_content_chars=settings.max_content_chars,
            quota=partial(limiter.hit, message_limit, message="too many messages, slow down"),
            fanout=HubFanout(hub),
            assistant=assistant,
            turns=turns,
            answer_gate=budgets.check,
            on_batch=metrics.message_batch_size.observe,
        )
        versions = VersionService(
            database,
            fanout=hub,
            validate=lambda content: messages.validate(content, None, None, None)[0],
            assistant=assistant,
            # The one message quota: a regeneration or an edit asks the model as a post does.
            quota=partial(limiter.hit, message_limit, message="too many messages, slow down"),
            answer_gate=budgets.check,
            history_changed=turns.drop,
            memory_forgotten=context.memory.forgotten,
        )
        # Runs before the assistant drains: posts whose connections were closed finish
        # landing, so the answers they confirm are among those drained.
        stack.push_async_callback(messages.landed, settings.drain_timeout_s)
        container = Container(
            settings=settings,
            database=database,
            metrics=metrics,
            limiter=limiter,
            accounts=accounts,
            sessions=sessions,
            messages=messages,
            api_keys=_build_api_keys(database, accounts, hub),
            budgets=budgets,
            redis=redis,
            node_id=node_id,
            http=http,
            hub=hub,
            presence=presence,
            stream_log=stream_log,
            web_search=context.web_search,
            embeddings=context.embeddings,
            memory=context.memory,
            documents=context.documents,
            retriever=context.retriever,
            llm=llm,
            context=assembler,
            assistant=assistant,
            sse=SSEStreamer(messages, hub, settings),
            versions=versions,
            ws_connection_caps=_ConnectionCaps(),
            readiness=readiness,
            message_limit=message_limit,
            typing_limit=Limit("typing", settings.typing_per_window, settings.typing_window_s),
            join_limit=Limit("join", settings.joins_per_window, settings.join_window_s),
            frame_limit=Limit("frame", settings.frames_per_window, settings.frame_window_s),
        )
        # API keys' last-use writes finish before the database closes.
        stack.push_async_callback(container.api_keys.drain)
        sweeper = asyncio.create_task(_sweep_idle_sessions(container), name="session-sweeper")
        stack.callback(sweeper.cancel)
        yield container


async def _open_database(settings: Settings, stack: contextlib.AsyncExitStack) -> Database:
    database = Database(
        settings.database_url,
        pool_size=settings.db_pool_size,
        connect_timeout_s=settings.db_connect_timeout_s,
        statement_timeout_s=settings.db_statement_timeout_s,
        pool_timeout_s=settings.db_pool_timeout_s,
        retry_after_s=settings.db_retry_after_s,
    )
    stack.push_async_callback(database.dispose)
    if settings.migrate_on_start:
        await migrate.upgrade(database)
    return database


def _open_redis(settings: Settings, stack: contextlib.AsyncExitStack) -> Redis | None:
    if not settings.redis_url:
        return None
    from redis.asyncio import Redis

    redis = Redis.from_url(settings.redis_url)
    stack.push_async_callback(redis.aclose)
    return redis


def _open_http(settings: Settings, stack: contextlib.AsyncExitStack) -> httpx.AsyncClient:
    """The process' one client for every upstream (OpenRouter, Tavily, embeddings)."""
    limits = httpx.Limits(
        max_connections=settings.upstream_max_connections,
        max_keepalive_connections=settings.upstream_max_idle_connections,
        keepalive_expiry=settings.upstream_keepalive_s,
    )
    http = httpx.AsyncClient(timeout=HTTP_TIMEOUT, limits=limits)
    stack.push_async_callback(http.aclose)
    return http


async def _start_realtime(
    settings: Settings,
    node_id: str,
    database: Database,
    sessions: SessionService,
    turns: TurnCache,
    metrics: Metrics,
    stack: contextlib.AsyncExitStack,
) -> tuple[Hub, Presence, StreamLog]:
    """Presence, the stream log and the hub over the bus, memory or Redis; started."""
    presence = make_presence(settings.redis_url, node_id, ttl_s=settings.presence_ttl_s)
    stream_log = make_stream_log(settings.redis_url, node_id, ttl_s=settings.stream_log_ttl_s)
    hub = Hub(
        bus_factory=make_bus(settings.redis_url),
        presence=presence,
        stream_log=stream_log,
        fetch_messages_after=sessions.messages_after,
        metrics=metrics,
        keys=Keys(),
        # Messages stored on other nodes extend this node's copies of recent turns.
        on_released=remember_stored_messages(turns),
    )
    takeover = StreamTakeover(database, hub, turns, metrics)
    # Before ``start``: presence reports from its first heartbeat on.
    _bind_back_references(presence, hub, takeover)
    await hub.start()
    stack.push_async_callback(hub.close)
    if hasattr(stream_log, "close"):
        stack.push_async_callback(stream_log.close)
    return hub, presence, stream_log


def _bind_back_references(presence: Presence, hub: Hub, takeover: StreamTakeover) -> None:
    """The only wiring after construction: the cycles through presence.

    - The hub publishes the joins and leaves that presence finds by itself (dead
      nodes' users reaped, this node's users re-registered), but the hub is built
      with the presence, so presence learns of the hub here.
    - When presence finds a node dead, the takeover ends the streams that node was
      writing; the takeover needs the hub, hence presence again.
    """
    presence.on_reaped = hub.publish_reaped
    presence.on_node_gone = takeover.node_gone


def _build_accounts(
    settings: Settings,
    jwt_secret: str,
    database: Database,
    redis: Redis | None,
    limiter: RateLimiter,
    hub: Hub,
) -> AccountService:
    tokens_ = TokenService(
        secret=jwt_secret,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        access_ttl_s=settings.access_token_ttl_s,
        leeway_s=settings.jwt_leeway_s,
        public_key=settings.jwt_public_key,
        jwks_url=settings.jwt_jwks_url,
    )
    callers = CallerCache(settings.caller_cache_ttl_s)
    # Every node's caller cache hears of a change to a user over the control channel.
    notices = CallerNotices(hub, callers)
    window = settings.login_window_s
    return AccountService(
        database,
        tokens_,
        make_ticket_store(redis),
        limiter,
        refresh_ttl_s=settings.refresh_token_ttl_s,
        ticket_ttl_s=settings.ws_ticket_ttl_s,
        login_limit=LoginLimits(
            pair=Limit("login", settings.login_attempts_per_window, window),
            account=Limit("login-account", settings.login_account_failures_per_window, window),
            ip=Limit("login-ip", settings.login_ip_failures_per_window, window),
        ),
        family_max_age_s=settings.refresh_family_max_age_s,
        callers=callers,
        on_caller_changed=notices.caller_changed,
        on_family_revoked=notices.family_revoked,
    )


@dataclass(frozen=True)
class _Context:
    web_search: WebSearch
    embeddings: EmbeddingsClient | None
    memory: MemoryService
    documents: DocumentService
    retriever: Retriever


def _build_api_keys(database: Database, accounts: AccountService, hub: Hub) -> ApiKeyService:
    """Verified keys are cached per node; a revocation reaches every node's cache."""
    verified = VerifiedKeys()
    notices = ApiKeyNotices(hub, verified)
    return ApiKeyService(database, accounts, verified=verified, revoked=notices.key_revoked)


def _build_context(
    settings: Settings,
    database: Database,
    redis: Redis | None,
    http: httpx.AsyncClient,
    sessions: SessionService,
    readiness: dict[str, ReadinessProbe],
) -> _Context:
    """Web search (Tavily only with ``TAVILY_API_KEY``), per-user memory, documents and
    retrieval (embeddings only with ``EMBEDDINGS_URL``)."""
    tavily = None
    if settings.tavily_api_key is not None:
        tavily = client = TavilyClient(
            http,
            settings.tavily_base_url,
            settings.tavily_api_key.get_secret_value(),
            deadline_s=settings.search_deadline_s,
            max_body_bytes=settings.search_max_body_bytes,
        )
        readiness["tavily"] = lambda: "circuit open" if client.breaker_state == "open" else "ok"
    search_cache = make_search_cache(redis, prefix=DEFAULT_KEYS.search_cache(""))
    embeddings = None
    if settings.embeddings_url:
        key = settings.embeddings_api_key
        embeddings = EmbeddingsClient(
            http,
            settings.embeddings_url,
            settings.embeddings_model,
            api_key=key.get_secret_value() if key is not None else None,
        )
    return _Context(
        web_search=WebSearch(tavily, search_cache, ttl_s=settings.search_cache_ttl_s),
        embeddings=embeddings,
        memory=MemoryService(
            database,
            make_user_context_cache(redis, prefix=DEFAULT_KEYS.user_context("")),
            max_chars=settings.max_memory_chars,
            cache_ttl_s=USER_CONTEXT_TTL_S,
        ),
        documents=DocumentService(
            database,
            sessions,
            embeddings,
            max_bytes=settings.max_document_bytes,
            quota_bytes=settings.upload_quota_bytes,
            quota_documents=settings.upload_quota_documents,
        ),
        retriever=Retriever(database, embeddings),
    )


async def _start_assistant(
    settings: Settings,
    database: Database,
    hub: Hub,
    turns: TurnCache,
    context: _Context,
    http: httpx.AsyncClient,
    metrics: Metrics,
    readiness: dict[str, ReadinessProbe],
    stack: contextlib.AsyncExitStack,
    budgets: BudgetService,
    redis: Redis | None,
) -> tuple[ResilientProvider, ContextAssembler, Assistant]:
    """The provider, what the model is given, and the runner of answers."""
    llm = make_provider(settings, metrics, http, budgets)
    stack.push_async_callback(llm.aclose)
    llm.warm()
    readiness["llm"] = lambda: (
        "ok" if "open" not in llm.breaker_states().values() else "circuit open"
    )
    # Loading the tokenizer takes about 140 ms: here, before the heap is frozen
    # (``GC_FREEZE``), rather than in front of this node's first answer.
    await asyncio.to_thread(tokens.encoding)
    assembler = ContextAssembler(
        database,
        llm,
        settings,
        turns=turns,
        web_search=context.web_search,
        memory=context.memory,
        retriever=context.retriever,
    )
    assistant = Assistant(
        database=database,
        hub=hub,
        provider=llm,
        context=assembler,
        settings=settings,
        metrics=metrics,
        memory=context.memory,
        slots=make_answer_slots(redis, settings),
        on_version=hub.publish_version,
    )
    # Runs before the hub closes (the stack unwinds in reverse): deltas of draining
    # generations still reach members on other nodes.
    stack.push_async_callback(assistant.drain, settings.drain_timeout_s)
    return llm, assembler, assistant


async def _sweep_idle_sessions(container: Container) -> None:
    """Expire idle sessions; a session with anyone present is never idle."""

    while True:
        await asyncio.sleep(container.settings.sweep_interval_s)
        try:
            expired = await container.sessions.expire_idle(container.presence.occupied)
            if expired:
                log.info("expired %d idle sessions", expired)
        except ParleyError as exc:
            log.warning("session sweep failed: %s", exc.message)
        except Exception:
            log.exception("session sweep failed")
