"""The database behind a proxy that refuses, cuts, blackholes: every failure is
``Unavailable`` with a retry hint, and none waits longer than its timeout."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from db.engine import Database
from errors import Unavailable
from tests.faults.postgres import pg_proxy, through
from tests.faults.tcp_proxy import TcpProxy

__all__ = ["pg_proxy"]

# A liveness bound, far above the timeouts below: without them these waits were minutes.
BOUND_S = 10.0


@pytest.fixture
async def database(postgres_url: str, pg_proxy: TcpProxy) -> AsyncIterator[Database]:
    db = Database(
        through(pg_proxy, postgres_url),
        pool_size=1,
        connect_timeout_s=1.0,
        statement_timeout_s=1.0,
        pool_timeout_s=0.5,
    )
    try:
        yield db
    finally:
        await pg_proxy.restore()
        await asyncio.wait_for(db.dispose(), BOUND_S)


async def select_one(database: Database) -> int:
    async with database.read() as session:
        return int((await session.execute(text("SELECT 1"))).scalar_one())


async def unavailable(database: Database) -> Unavailable:
    with pytest.raises(Unavailable) as caught:
        await asyncio.wait_for(select_one(database), BOUND_S)
    assert caught.value.retry_after is not None and caught.value.retry_after > 0
    return caught.value


async def test_a_refused_connection_is_unavailable(database: Database, pg_proxy: TcpProxy) -> None:
    await pg_proxy.refuse()

    await unavailable(database)

    await pg_proxy.restore()
    assert await select_one(database) == 1


async def test_a_cut_connection_is_unavailable_then_replaced(
    database: Database, pg_proxy: TcpProxy
) -> None:
    assert await select_one(database) == 1
    await pg_proxy.refuse()  # the pooled connection is cut, and no new one can open

    await unavailable(database)

    await pg_proxy.restore()
    assert await select_one(database) == 1


async def test_a_statement_in_a_partition_times_out(database: Database, pg_proxy: TcpProxy) -> None:
    assert await select_one(database) == 1  # a pooled connection, in use recently
    pg_proxy.blackhole()

    await unavailable(database)

    await pg_proxy.restore()
    assert await select_one(database) == 1


async def test_a_new_connection_in_a_partition_times_out(
    database: Database, pg_proxy: TcpProxy
) -> None:
    pg_proxy.blackhole()  # accepted, then silence: the connect never completes

    await unavailable(database)


async def test_an_exhausted_pool_is_unavailable_after_the_checkout_timeout(
    database: Database,
) -> None:
    # pool_size=1 and as many overflow: two transactions hold every connection.
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(2):
            session = await stack.enter_async_context(database.read())
            await session.execute(text("SELECT 1"))

        await unavailable(database)


async def test_a_ping_in_a_partition_is_unavailable(database: Database, pg_proxy: TcpProxy) -> None:
    pg_proxy.blackhole()

    with pytest.raises(Unavailable):
        await asyncio.wait_for(database.ping(), BOUND_S)
