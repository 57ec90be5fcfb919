"""``Database.single_statement``: the statement is done when the block ends. On SQLite
its connection goes back to the pool in the background; at once after an error, and
at once on PostgreSQL."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from db.engine import Database


@pytest.fixture
async def database(empty_database_url: str) -> AsyncIterator[Database]:
    database = Database(empty_database_url)
    try:
        yield database
    finally:
        await database.dispose()


def checked_out(database: Database) -> int:
    return int(database.engine.sync_engine.pool.checkedout())  # type: ignore[attr-defined]


async def test_the_block_ends_before_its_connection_is_given_back(database: Database) -> None:
    async with database.single_statement() as session:
        await session.execute(text("CREATE TABLE kept (x INTEGER)"))
    still_out = checked_out(database)
    await database.closed_in_background()
    back = checked_out(database)
    async with database.read() as session:
        rows = (await session.execute(text("SELECT count(*) FROM kept"))).scalar_one()

    assert (still_out, back, rows) == (1 if database.in_process else 0, 0, 0)


async def test_a_failed_statement_gives_its_connection_back_before_it_raises(
    database: Database,
) -> None:
    with pytest.raises(DBAPIError):
        async with database.single_statement() as session:
            await session.execute(text("SELECT * FROM no_such_table"))

    assert checked_out(database) == 0


async def test_on_sqlite_the_block_has_committed_before_its_connection_goes_back(
    tmp_path: Path,
) -> None:
    # The message a member posts is fanned out right after its store returns, while
    # its session is still being closed: another connection must already see it.
    path = tmp_path / "committed.db"
    database = Database(f"sqlite+aiosqlite:///{path}")
    try:
        async with database.single_statement() as session:
            await session.execute(text("CREATE TABLE kept (x INTEGER)"))
            await session.execute(text("INSERT INTO kept VALUES (1)"))
        # Nothing awaited since the block ended: the background close has not run.
        still_out = checked_out(database)
        with contextlib.closing(sqlite3.connect(path)) as other:
            seen = other.execute("SELECT x FROM kept").fetchall()
    finally:
        await database.dispose()

    assert (still_out, seen) == (1, [(1,)])
