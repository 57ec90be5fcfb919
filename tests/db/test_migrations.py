"""Alembic migrations go up, down and up again on both back ends."""

from __future__ import annotations

from sqlalchemy import inspect

from db import migrate
from db.engine import Database
from db.models import Base


async def _tables(database: Database) -> set[str]:
    async with database.engine.connect() as conn:
        names = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    return names - {"alembic_version"}


async def test_migrations_go_up_down_and_up_again(empty_database_url: str) -> None:
    database = Database(empty_database_url)
    head = migrate.head_revision()
    try:
        assert await migrate.current_revision(database) is None

        await migrate.upgrade(database)
        assert await migrate.current_revision(database) == head
        assert await _tables(database) >= set(Base.metadata.tables)

        await migrate.downgrade(database, "base")
        assert await migrate.current_revision(database) is None
        assert await _tables(database) == set()

        await migrate.upgrade(database)
        assert await migrate.current_revision(database) == head
        assert await _tables(database) >= set(Base.metadata.tables)
    finally:
        await database.dispose()


async def test_upgrading_an_up_to_date_database_changes_nothing(empty_database_url: str) -> None:
    database = Database(empty_database_url)
    try:
        await migrate.upgrade(database)
        before = await _tables(database)

        await migrate.upgrade(database)

        assert await _tables(database) == before
        assert await migrate.current_revision(database) == migrate.head_revision()
    finally:
        await database.dispose()
