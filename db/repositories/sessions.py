"""Chat sessions and their members."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import ChatSession, SessionMember, User
from errors import Conflict


async def create_session(
    session: AsyncSession,
    *,
    owner_id: uuid.UUID,
    title: str,
    model: str | None,
    system_prompt: str | None,
) -> ChatSession:
    chat = ChatSession(owner_id=owner_id, title=title, model=model, system_prompt=system_prompt)
    session.add(chat)
    await session.flush()
    session.add(SessionMember(session_id=chat.id, user_id=owner_id, role="owner"))
    await session.flush()
    return chat


async def get_session(session: AsyncSession, session_id: uuid.UUID) -> ChatSession | None:
    return await session.get(ChatSession, session_id)


async def get_session_for_member(
    session: AsyncSession, session_id: uuid.UUID, user_id: uuid.UUID
) -> ChatSession | None:
    """The session if ``user_id`` is a member; None otherwise, so ids reveal nothing."""
    return (
        await session.execute(
            select(ChatSession)
            .join(SessionMember, SessionMember.session_id == ChatSession.id)
            .where(ChatSession.id == session_id, SessionMember.user_id == user_id)
        )
    ).scalar_one_or_none()


async def is_member(session: AsyncSession, session_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    return (
        await session.execute(
            select(SessionMember.user_id).where(
                SessionMember.session_id == session_id, SessionMember.user_id == user_id
            )
        )
    ).first() is not None


async def list_sessions_for_user(
    session: AsyncSession, user_id: uuid.UUID, statuses: Sequence[str] | None, limit: int
) -> list[ChatSession]:
    query = (
        select(ChatSession)
        .join(SessionMember, SessionMember.session_id == ChatSession.id)
        .where(SessionMember.user_id == user_id)
        .order_by(ChatSession.last_activity_at.desc(), ChatSession.id)
        .limit(limit)
    )
    if statuses is not None:
        query = query.where(ChatSession.status.in_(statuses))
    return list((await session.execute(query)).scalars())


async def bump_history_revision(session: AsyncSession, session_id: Any) -> None:
    """Mark what answering a turn reads as changed (``ChatSession.history_revision``).

    ``session_id`` may be a scalar subquery. Callers bump before their own change, so
    the session row is locked first, in the same order as an append takes it.
    """
    await session.execute(
        update(ChatSession)
        .where(ChatSession.id == session_id)
        .values(history_revision=ChatSession.history_revision + 1)
    )


async def update_session(
    session: AsyncSession, session_id: uuid.UUID, **values: object
) -> ChatSession | None:
    await session.execute(
        update(ChatSession)
        .where(ChatSession.id == session_id)
        .values(**values, history_revision=ChatSession.history_revision + 1)
    )
    chat = await session.get(ChatSession, session_id)
    if chat is not None:
        await session.refresh(chat)
    return chat


async def touch_sessions(
    session: AsyncSession, session_ids: Sequence[uuid.UUID], now: datetime
) -> None:
    """Record activity; an expired session that sees activity is active again."""
    if session_ids:
        await session.execute(
            update(ChatSession)
            .where(ChatSession.id.in_(session_ids), ChatSession.status != "closed")
            .values(last_activity_at=now, status="active")
        )


async def idle_session_ids(
    session: AsyncSession, cutoff: datetime, limit: int = 500
) -> list[uuid.UUID]:
    rows = await session.execute(
        select(ChatSession.id)
        .where(ChatSession.status == "active", ChatSession.last_activity_at < cutoff)
        .limit(limit)
    )
    return list(rows.scalars())


async def expire_sessions(
    session: AsyncSession, session_ids: Sequence[uuid.UUID], cutoff: datetime
) -> int:
    """Expire those still idle (activity may have come since they were listed)."""
    if not session_ids:
        return 0
    result = await session.execute(
        update(ChatSession)
        .where(
            ChatSession.id.in_(session_ids),
            ChatSession.status == "active",
            ChatSession.last_activity_at < cutoff,
        )
        .values(status="expired")
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


async def add_member(
    session: AsyncSession, session_id: uuid.UUID, user_id: uuid.UUID
) -> SessionMember:
    member = SessionMember(session_id=session_id, user_id=user_id, role="member")
    session.add(member)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Conflict("the user is already a member of this session") from exc
    return member


async def remove_member(session: AsyncSession, session_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    await bump_history_revision(session, session_id)
    result = await session.execute(
        delete(SessionMember).where(
            SessionMember.session_id == session_id,
            SessionMember.user_id == user_id,
            SessionMember.role != "owner",
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def list_members(
    session: AsyncSession, session_id: uuid.UUID
) -> list[tuple[SessionMember, User]]:
    rows = await session.execute(
        select(SessionMember, User)
        .join(User, User.id == SessionMember.user_id)
        .where(SessionMember.session_id == session_id)
        .order_by(SessionMember.added_at)
    )
    return [(member, user) for member, user in rows]
