"""``Database.single_statement``: the statement is done when the block ends. On SQLite
its connection goes back to the pool in the background; at once after an error, and
at once on PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from db.engine import Database


async def test_the_block_ends_before_its_connection_is_given_back(
    empty_database_url: str,
) -> None:
    database = Database(empty_database_url)
    pool = database.engine.sync_engine.pool
    try:
        async with database.single_statement() as session:
            await session.execute(text("CREATE TABLE kept (x INTEGER)"))
        still_out = pool.checkedout()  # type: ignore[attr-defined]
        await database.closed_in_background()
        back = pool.checkedout()  # type: ignore[attr-defined]
        async with database.read() as session:
            rows = (await session.execute(text("SELECT count(*) FROM kept"))).scalar_one()
    finally:
        await database.dispose()

    assert (still_out, back, rows) == (1 if database.in_process else 0, 0, 0)


async def test_a_failed_statement_gives_its_connection_back_before_it_raises(
    empty_database_url: str,
) -> None:
    database = Database(empty_database_url)
    pool = database.engine.sync_engine.pool
    try:
        with pytest.raises(DBAPIError):
            async with database.single_statement() as session:
                await session.execute(text("SELECT * FROM no_such_table"))
        out_after_error = pool.checkedout()  # type: ignore[attr-defined]
    finally:
        await database.dispose()

    assert out_after_error == 0
