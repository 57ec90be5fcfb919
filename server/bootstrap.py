"""Builds every shared resource from the settings, in one place, and tears it down.

This is where an implementation is picked for each interface: SQLite or PostgreSQL
(by ``DATABASE_URL``), memory or Redis (by ``REDIS_URL``), OpenRouter or the offline
model (by ``OPENROUTER_API_KEY``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import uuid
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

from db import migrate
from db.engine import Database
from errors import ParleyError
from server.config import ConfigError, Settings
from server.container import Container
from server.context_layer import start_context
from server.metrics import Metrics
from server.security.callers import CallerCache
from server.security.ratelimit import Limit, RateLimiter
from server.security.tickets import MemoryTicketStore, RedisTicketStore, TicketStore
from server.security.tokens import TokenService
from server.services.accounts import AccountService, LoginLimits
from server.services.messages import MessageService
from server.services.sessions import SessionService

log = logging.getLogger("parley")
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
    async with contextlib.AsyncExitStack() as stack:
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

        redis = None
        if settings.redis_url:
            from redis.asyncio import Redis

            redis = Redis.from_url(settings.redis_url)
            stack.push_async_callback(redis.aclose)

        limiter = RateLimiter(settings.redis_url, redis.connection_pool if redis else None)
        tickets: TicketStore = RedisTicketStore(redis) if redis else MemoryTicketStore()
        tokens = TokenService(
            secret=resolve_jwt_secret(settings),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            access_ttl_s=settings.access_token_ttl_s,
            leeway_s=settings.jwt_leeway_s,
            public_key=settings.jwt_public_key,
            jwks_url=settings.jwt_jwks_url,
        )
        accounts = AccountService(
            database,
            tokens,
            tickets,
            limiter,
            refresh_ttl_s=settings.refresh_token_ttl_s,
            ticket_ttl_s=settings.ws_ticket_ttl_s,
            login_limit=LoginLimits(
                pair=Limit("login", settings.login_attempts_per_window, settings.login_window_s),
                account=Limit(
                    "login-account",
                    settings.login_account_failures_per_window,
                    settings.login_window_s,
                ),
                ip=Limit(
                    "login-ip", settings.login_ip_failures_per_window, settings.login_window_s
                ),
            ),
            family_max_age_s=settings.refresh_family_max_age_s,
            callers=CallerCache(settings.caller_cache_ttl_s),
        )
        message_limit = Limit("message", settings.messages_per_window, settings.message_window_s)
        container = Container(
            settings=settings,
            database=database,
            metrics=metrics,
            limiter=limiter,
            accounts=accounts,
            sessions=SessionService(
                database,
                idle_expiry_s=settings.session_idle_expiry_s,
                allowed_models=settings.allowed_models,
            ),
            messages=MessageService(
                database,
                max_content_chars=settings.max_content_chars,
                quota=partial(limiter.hit, message_limit, message="too many messages, slow down"),
            ),
            redis=redis,
            message_limit=message_limit,
            typing_limit=Limit("typing", settings.typing_per_window, settings.typing_window_s),
            join_limit=Limit("join", settings.joins_per_window, settings.join_window_s),
            frame_limit=Limit("frame", settings.frames_per_window, settings.frame_window_s),
        )
        container.extras["node_id"] = uuid.uuid4().hex[:12]
        await _start_layers(container, stack)
        sweeper = asyncio.create_task(_sweep_idle_sessions(container), name="session-sweeper")
        stack.callback(sweeper.cancel)
        yield container


async def _start_layers(container: Container, stack: contextlib.AsyncExitStack) -> None:
    """Start the realtime hub and the assistant, when their packages are wired in."""
    first, last = _starters()
    for starter in [*first, *STARTERS, *last]:
        await starter(container, stack)


def _starters() -> tuple[list[Any], list[Any]]:
    """The realtime layer first and the assistant last: it uses what the others built."""
    from server.assistant_layer import start_assistant
    from server.realtime_layer import start_realtime

    return [start_realtime], [start_assistant]


STARTERS: list[Any] = [start_context]


async def _sweep_idle_sessions(container: Container) -> None:
    """Expire idle sessions; a session with anyone present is never idle."""

    async def occupied(session_ids: list[str]) -> set[str]:
        presence = container.extras.get("presence")
        return await presence.occupied(session_ids) if presence else set()

    while True:
        await asyncio.sleep(container.settings.sweep_interval_s)
        try:
            expired = await container.sessions.expire_idle(occupied)
            if expired:
                log.info("expired %d idle sessions", expired)
        except ParleyError as exc:
            log.warning("session sweep failed: %s", exc.message)
        except Exception:
            log.exception("session sweep failed")
