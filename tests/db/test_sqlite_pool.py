"""The embedded database's pool rolls back only what is left open."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from db.engine import Database


async def test_a_connection_given_back_inside_a_transaction_is_rolled_back(
    tmp_path: Path,
) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'pool.db'}")
    try:
        async with database.engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            await driver.execute("BEGIN IMMEDIATE")
            await driver.execute("CREATE TABLE left_open (x INTEGER)")
        # The pool's one connection serves next: its BEGIN IMMEDIATE would fail
        # ("cannot start a transaction within a transaction") had nothing rolled back.
        async with database.transaction() as session:
            await session.execute(text("CREATE TABLE committed (x INTEGER)"))
        async with database.read() as session:
            names = (await session.execute(text("SELECT name FROM sqlite_master"))).scalars()
            tables = set(names)
    finally:
        await database.dispose()

    assert tables == {"committed"}
