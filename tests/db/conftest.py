"""Database fixtures: a fresh, empty database per test on each back end."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from tests.services import POSTGRES_URL, require_postgres

ADMIN_DSN = POSTGRES_URL.replace("postgresql+asyncpg", "postgresql")


async def _admin(statement: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def fresh_postgres_url() -> AsyncIterator[str]:
    """A database made for one test and dropped after it."""
    require_postgres()
    name = f"parley_db_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    await _admin(f'CREATE DATABASE "{name}"')
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    async for url in fresh_postgres_url():
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
async def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
        return
    async for url in fresh_postgres_url():
        yield url
