"""Memory items: what the assistant keeps about one user, always scoped by ``user_id``."""

from __future__ import annotations

import uuid

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import MemoryItem
from db.types import utcnow


async def list_for_user(session: AsyncSession, user_id: uuid.UUID) -> list[MemoryItem]:
    """Oldest first: the order the user added them in, which the prompt keeps."""
    rows = await session.execute(
        select(MemoryItem)
        .where(MemoryItem.user_id == user_id)
        .order_by(MemoryItem.created_at, MemoryItem.id)
    )
    return list(rows.scalars())


async def add(
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    kind: str,
    content: str,
    source: str,
    source_message_id: uuid.UUID | None = None,
) -> MemoryItem:
    now = utcnow()
    item = MemoryItem(
        user_id=user_id,
        kind=kind,
        content=content,
        source=source,
        source_message_id=source_message_id,
        created_at=now,
        updated_at=now,
    )
    session.add(item)
    await session.flush()
    return item


async def replace(
    session: AsyncSession,
    user_id: uuid.UUID,
    item_id: uuid.UUID,
    *,
    kind: str,
    content: str,
    only_source: str | None = None,
    source_message_id: uuid.UUID | None = None,
) -> bool:
    """Rewrite one item in place (it keeps its id and place); False when there is none.

    ``only_source`` restricts the rewrite to items of that source, so that a learned
    guess can never overwrite what the user typed in themselves. The item's text now
    comes from ``source_message_id``, so that is its source from now on.
    """
    statement = (
        update(MemoryItem)
        .where(MemoryItem.id == item_id, MemoryItem.user_id == user_id)
        .values(
            kind=kind, content=content, source_message_id=source_message_id, updated_at=utcnow()
        )
    )
    if only_source is not None:
        statement = statement.where(MemoryItem.source == only_source)
    result = await session.execute(statement)
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def delete_one(session: AsyncSession, user_id: uuid.UUID, item_id: uuid.UUID) -> bool:
    result = await session.execute(
        delete(MemoryItem).where(MemoryItem.id == item_id, MemoryItem.user_id == user_id)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def delete_all(session: AsyncSession, user_id: uuid.UUID) -> int:
    result = await session.execute(delete(MemoryItem).where(MemoryItem.user_id == user_id))
    return int(result.rowcount)  # type: ignore[attr-defined]


async def delete_learned_from(session: AsyncSession, message_id: uuid.UUID) -> int:
    """Forget what extraction learned from the question ``message_id`` (its shown
    version is changing); what a user typed in themselves is never touched."""
    result = await session.execute(
        delete(MemoryItem).where(
            MemoryItem.source_message_id == message_id, MemoryItem.source == "learned"
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
