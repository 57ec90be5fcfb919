"""PostgreSQL behind a ``TcpProxy``: fixtures for tests that cut, refuse, blackhole
or slow the database. Import the fixtures into a test module to use them."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from server.app import create_app
from server.config import Settings
from tests.conftest import LiveServer, make_settings
from tests.faults.tcp_proxy import TcpProxy, tcp_proxy
from tests.services import require_postgres


def through(proxy: TcpProxy, url: str) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{proxy.port}"
    netloc[-1] = host
    return parts._replace(netloc="@".join(netloc)).geturl()


@pytest.fixture
async def pg_proxy() -> AsyncIterator[TcpProxy]:
    """A proxy in front of the real PostgreSQL (never touched itself)."""
    url = urlsplit(require_postgres())
    async with tcp_proxy(url.hostname or "127.0.0.1", url.port or 5432) as proxy:
        yield proxy


# Short bounds, so that an outage answers within a test's patience; the liveness bounds
# the tests assert (BOUND_S) are far above them.
FAULT_TIMEOUTS: dict[str, Any] = {
    "db_connect_timeout_s": 1.0,
    "db_statement_timeout_s": 1.0,
    "db_pool_timeout_s": 1.0,
    "db_retry_after_s": 2.0,
    # Every handshake reads the user's row: the outage must show there too.
    "caller_cache_ttl_s": 0.0,
}
BOUND_S = 10.0


@pytest.fixture
def proxied_settings(postgres_database: str, pg_proxy: TcpProxy) -> Settings:
    return make_settings(through(pg_proxy, postgres_database), **FAULT_TIMEOUTS)


@contextlib.asynccontextmanager
async def serving(settings: Settings, proxy: TcpProxy) -> AsyncIterator[LiveServer]:
    """The real app with ``settings``, on a loopback port; the proxy healed at the end
    so that the app can shut down cleanly."""
    server = LiveServer(create_app(settings))
    await server.start()
    try:
        yield server
    finally:
        await proxy.restore()
        await server.stop()


@pytest.fixture
async def outage_server(
    proxied_settings: Settings, pg_proxy: TcpProxy
) -> AsyncIterator[LiveServer]:
    """The real app on PostgreSQL through ``pg_proxy``, served on a loopback port."""
    async with serving(proxied_settings, pg_proxy) as server:
        yield server
