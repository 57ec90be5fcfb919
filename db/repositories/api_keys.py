"""Per-user API keys: rows keyed by the SHA-256 of the secret."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import ApiKey
from db.types import utcnow


async def create(
    session: AsyncSession, *, user_id: uuid.UUID, name: str, prefix: str, key_hash: str
) -> ApiKey:
    key = ApiKey(user_id=user_id, name=name, prefix=prefix, key_hash=key_hash)
    session.add(key)
    await session.flush()
    return key


async def list_for_user(session: AsyncSession, user_id: uuid.UUID) -> list[ApiKey]:
    """The user's keys that are not revoked, oldest first."""
    rows = await session.execute(
        select(ApiKey)
        .where(ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
        .order_by(ApiKey.created_at, ApiKey.id)
    )
    return list(rows.scalars())


async def revoke(session: AsyncSession, user_id: uuid.UUID, key_id: uuid.UUID) -> bool:
    """Revoke one of the user's live keys; False if there is no such key of theirs."""
    result = await session.execute(
        update(ApiKey)
        .where(ApiKey.id == key_id, ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def find_live(session: AsyncSession, key_hash: str) -> ApiKey | None:
    return (
        await session.execute(
            select(ApiKey).where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
        )
    ).scalar_one_or_none()


async def touch(session: AsyncSession, key_id: uuid.UUID, when: datetime) -> None:
    await session.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=when))
