"""PostgreSQL behind a ``TcpProxy``: fixtures for tests that cut, refuse, blackhole
or slow the database. Import the fixtures into a test module to use them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest

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
