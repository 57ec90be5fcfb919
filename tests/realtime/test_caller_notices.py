"""Two nodes, each with its own hub on the real Redis bus and its own caller cache,
sharing one database: a change to a user on one node reaches the other's cache over
the control channel."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from db import migrate
from db.engine import Database
from errors import Unauthorized
from realtime.bus_redis import RedisBus
from realtime.hub import Hub
from realtime.keys import Keys
from realtime.presence_memory import MemoryPresence
from realtime.stream_log_memory import MemoryStreamLog
from server.metrics import Metrics
from server.security.callers import CallerCache
from server.security.ratelimit import Limit, RateLimiter
from server.security.tickets import MemoryTicketStore
from server.security.tokens import TokenService
from server.services.accounts import AccountService, Principal
from server.services.hub_links import CallerNotices
from tests.conftest import TEST_JWT_SECRET

# An hour: only the notice, never the expiry, can make node B see a change.
LONG_TTL_S = 3600.0
NOTICE_WAIT_S = 2.0


async def _no_messages(session_id: str, after: int, limit: int) -> list[dict[str, Any]]:
    return []


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    db = Database(database_url, pool_size=2)
    await migrate.upgrade(db)
    yield db
    await db.dispose()


@pytest.fixture
async def nodes(
    database: Database, redis_url: str, prefix: str
) -> AsyncIterator[list[AccountService]]:
    """Two nodes' account services, each wired to its own hub as the server does."""
    async with contextlib.AsyncExitStack() as stack:
        services = []
        for _ in range(2):
            hub = Hub(
                bus_factory=lambda on_message, on_gap: RedisBus(
                    redis_url, on_message, on_gap, prefix=prefix
                ),
                presence=MemoryPresence(),
                stream_log=MemoryStreamLog(60),
                fetch_messages_after=_no_messages,
                metrics=Metrics(),
                keys=Keys(prefix),
            )
            await hub.start()
            stack.push_async_callback(hub.close)
            callers = CallerCache(LONG_TTL_S)
            notices = CallerNotices(hub, callers)
            accounts = AccountService(
                database,
                TokenService(
                    secret=TEST_JWT_SECRET,
                    issuer="parley",
                    audience="parley",
                    access_ttl_s=900,
                    leeway_s=10,
                ),
                MemoryTicketStore(),
                RateLimiter(None),
                refresh_ttl_s=3600,
                ticket_ttl_s=60,
                login_limit=Limit("login", 100, 60),
                callers=callers,
                on_caller_changed=notices.caller_changed,
                on_family_revoked=notices.family_revoked,
            )
            services.append(accounts)
        yield services


ADMIN = Principal(user_id=uuid.uuid4(), name="Root", role="admin", expires_at=None)


async def _refused_soon(accounts: AccountService, token: str) -> Unauthorized:
    """Authenticate until refused; the notice crosses pub/sub after the change returned."""
    deadline = asyncio.get_running_loop().time() + NOTICE_WAIT_S
    while True:
        try:
            await accounts.authenticate(token)
        except Unauthorized as exc:
            return exc
        assert asyncio.get_running_loop().time() < deadline, "the other node still accepts it"
        await asyncio.sleep(0.01)


async def _signed_in(accounts: AccountService) -> tuple[uuid.UUID, str]:
    email = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    user = await accounts.register(email=email, password="correct horse battery", name="Ada")
    login = await accounts.login(email=email, password="correct horse battery", client_ip="::1")
    return user.id, login.access_token


async def test_disabling_on_one_node_reaches_the_other_nodes_cache(
    nodes: list[AccountService],
) -> None:
    node_a, node_b = nodes
    user_id, token = await _signed_in(node_a)
    assert (await node_b.authenticate(token)).user_id == user_id  # now cached on B

    await node_a.set_disabled(ADMIN, user_id, True)

    assert (await _refused_soon(node_b, token)).message == "account unavailable"


async def test_logout_all_on_one_node_reaches_the_other_nodes_cache(
    nodes: list[AccountService],
) -> None:
    node_a, node_b = nodes
    user_id, token = await _signed_in(node_a)
    assert (await node_b.authenticate(token)).user_id == user_id

    await node_a.logout_all(user_id)

    assert (await _refused_soon(node_b, token)).message == "token revoked"


async def test_without_a_notice_the_other_node_keeps_its_entry(
    nodes: list[AccountService], database: Database
) -> None:
    """What the notice is for: a change nobody announces stays unseen on node B."""
    node_a, node_b = nodes
    user_id, token = await _signed_in(node_a)
    await node_b.authenticate(token)
    node_a.on_caller_changed = None  # as if the bus had lost the notice

    await node_a.set_disabled(ADMIN, user_id, True)
    await asyncio.sleep(0.2)

    assert (await node_b.authenticate(token)).user_id == user_id
    with pytest.raises(Unauthorized):
        await node_a.authenticate(token)
