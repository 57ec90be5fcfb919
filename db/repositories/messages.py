"""Messages: gap-free per-session ``seq`` assigned inside the insert's transaction."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import ChatSession, Message, Summary
from db.types import utcnow


async def find_by_client_msg_id(
    session: AsyncSession, session_id: uuid.UUID, client_msg_id: str
) -> Message | None:
    return (
        await session.execute(
            select(Message).where(
                Message.session_id == session_id, Message.client_msg_id == client_msg_id
            )
        )
    ).scalar_one_or_none()


async def append_message(
    session: AsyncSession,
    *,
    session_id: uuid.UUID,
    role: str,
    user_id: uuid.UUID | None,
    content: str,
    client_msg_id: str | None = None,
    status: str = "complete",
    model: str | None = None,
    reply_to: uuid.UUID | None = None,
    message_id: uuid.UUID | None = None,
) -> Message:
    """Store a message with the session's next ``seq``.

    Bumping ``chat_sessions.last_seq`` takes the session row's write lock (PostgreSQL)
    or the database write lock (SQLite) until commit, so concurrent writers into one
    session, from any node, queue here and each gets the next number. A unique
    ``client_msg_id`` collision rolls the whole transaction back, bump included, so
    no ``seq`` is ever skipped. Callers handle that IntegrityError (see
    ``server.services.messages``).
    """
    now = utcnow()
    seq = (
        await session.execute(
            update(ChatSession)
            .where(ChatSession.id == session_id)
            .values(last_seq=ChatSession.last_seq + 1, last_activity_at=now)
            .returning(ChatSession.last_seq)
        )
    ).scalar_one()
    message = Message(
        id=message_id or uuid.uuid4(),
        session_id=session_id,
        seq=seq,
        role=role,
        user_id=user_id,
        content=content,
        client_msg_id=client_msg_id,
        status=status,
        model=model,
        reply_to=reply_to,
        created_at=now,
    )
    session.add(message)
    await session.flush()
    return message


async def page_before(
    session: AsyncSession, session_id: uuid.UUID, before_seq: int | None, limit: int
) -> list[Message]:
    """The ``limit`` messages just before ``before_seq`` (or the newest), oldest first."""
    query = select(Message).where(Message.session_id == session_id)
    if before_seq is not None:
        query = query.where(Message.seq < before_seq)
    rows = await session.execute(query.order_by(Message.seq.desc()).limit(limit))
    return list(reversed(rows.scalars().all()))


async def page_after(
    session: AsyncSession, session_id: uuid.UUID, after_seq: int, limit: int
) -> list[Message]:
    rows = await session.execute(
        select(Message)
        .where(Message.session_id == session_id, Message.seq > after_seq)
        .order_by(Message.seq)
        .limit(limit)
    )
    return list(rows.scalars())


async def get_message(
    session: AsyncSession, session_id: uuid.UUID, message_id: uuid.UUID
) -> Message | None:
    message = await session.get(Message, message_id)
    return message if message is not None and message.session_id == session_id else None


async def soft_delete(
    session: AsyncSession, message: Message, deleted_by: uuid.UUID, now: datetime
) -> None:
    await session.execute(
        update(Message)
        .where(Message.id == message.id, Message.deleted_at.is_(None))
        .values(deleted_at=now, deleted_by=deleted_by)
    )
    await session.refresh(message)


async def latest_summary(session: AsyncSession, session_id: uuid.UUID) -> Summary | None:
    return (
        await session.execute(
            select(Summary)
            .where(Summary.session_id == session_id)
            .order_by(Summary.covers_seq.desc())
            .limit(1)
        )
    ).scalar_one_or_none()


async def store_summary(
    session: AsyncSession, session_id: uuid.UUID, covers_seq: int, content: str, tokens: int
) -> Summary:
    summary = Summary(session_id=session_id, covers_seq=covers_seq, content=content, tokens=tokens)
    session.add(summary)
    await session.flush()
    return summary
