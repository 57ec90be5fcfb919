"""PostgreSQL's pool checks a connection before use only after it sat idle."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from sqlalchemy import text

from db.engine import Database
from errors import Unavailable


async def backend_pid(database: Database) -> int:
    async with database.read() as session:
        return int((await session.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def cut(url: str, pid: int) -> None:
    """What a PostgreSQL restart, or a proxy timing out, does to a pooled connection."""
    admin = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()
    await asyncio.sleep(0.2)  # the backend exits and the socket closes


async def test_a_connection_cut_while_idle_is_replaced_before_use(postgres_url: str) -> None:
    database = Database(postgres_url, ping_after_idle_s=0.1)
    try:
        first = await backend_pid(database)
        await cut(postgres_url, first)

        again = await backend_pid(database)
    finally:
        await database.dispose()

    assert again != first


async def test_a_connection_cut_while_in_steady_use_fails_one_request(postgres_url: str) -> None:
    # The trade for not pinging every checkout: the request that finds the connection
    # cut is unavailable, and the pool is dropped, so the next one gets a fresh one.
    database = Database(postgres_url, ping_after_idle_s=60)
    try:
        first = await backend_pid(database)
        await cut(postgres_url, first)

        with pytest.raises(Unavailable):
            await backend_pid(database)
        again = await backend_pid(database)
    finally:
        await database.dispose()

    assert again != first
