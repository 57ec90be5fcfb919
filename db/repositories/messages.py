"""Messages: gap-free per-session ``seq`` assigned inside the insert's transaction."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import bindparam, case, exists, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import ChatSession, Chunk, Message, SessionMember, Summary
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


# One statement checks membership and that the session is open, reopens an expired
# session, and takes the next seq; the row lock it takes serialises writers.
_NEXT_SEQ_FOR_MEMBER = (
    update(ChatSession)
    .where(
        ChatSession.id == bindparam("sid"),
        ChatSession.status != "closed",
        exists().where(
            SessionMember.session_id == ChatSession.id,
            SessionMember.user_id == bindparam("uid"),
        ),
    )
    .values(
        last_seq=ChatSession.last_seq + 1,
        last_activity_at=bindparam("now"),
        status=case((ChatSession.status == "expired", "active"), else_=ChatSession.status),
    )
    .returning(ChatSession.last_seq, ChatSession.model)
)


async def append_member_message(
    session: AsyncSession,
    *,
    session_id: uuid.UUID,
    user_id: uuid.UUID,
    content: str,
    client_msg_id: str | None,
    message_id: uuid.UUID,
) -> tuple[Message, str | None] | None:
    """A member's message with the session's next ``seq``, and the session's model.

    None when ``user_id`` is not a member or the session is closed (the caller reads
    which). Like ``append_message``, a ``client_msg_id`` already used raises
    IntegrityError and the rollback takes the seq bump with it. Two statements on the
    path to every answer's first token, hence Core rather than the ORM unit of work.
    """
    now = utcnow()
    connection = await session.connection()
    bumped = (
        await connection.execute(
            _NEXT_SEQ_FOR_MEMBER, {"sid": session_id, "uid": user_id, "now": now}
        )
    ).first()
    if bumped is None:
        return None
    seq, model = bumped
    values = {
        "id": message_id,
        "session_id": session_id,
        "seq": seq,
        "role": "user",
        "user_id": user_id,
        "content": content,
        "client_msg_id": client_msg_id,
        "status": "complete",
        "created_at": now,
    }
    await connection.execute(insert(Message), values)
    return Message(**values), model


_PAGE_COLUMNS = (
    Message.id,
    Message.session_id,
    Message.seq,
    Message.role,
    Message.user_id,
    Message.content,
    Message.client_msg_id,
    Message.status,
    Message.model,
    Message.reply_to,
    Message.created_at,
    Message.deleted_at,
)
_ASKER_IS_MEMBER = exists().where(
    SessionMember.session_id == bindparam("session_id"),
    SessionMember.user_id == bindparam("user_id"),
)
_MEMBER_PAGE = select(*_PAGE_COLUMNS).where(
    Message.session_id == bindparam("session_id"), _ASKER_IS_MEMBER
)
_MEMBER_PAGE_NEWEST = _MEMBER_PAGE.order_by(Message.seq.desc()).limit(bindparam("limit"))
_MEMBER_PAGE_BEFORE = _MEMBER_PAGE_NEWEST.where(Message.seq < bindparam("seq"))
_MEMBER_PAGE_AFTER = (
    _MEMBER_PAGE.where(Message.seq > bindparam("seq"))
    .order_by(Message.seq)
    .limit(bindparam("limit"))
)


async def member_page(
    session: AsyncSession,
    session_id: uuid.UUID,
    member_id: uuid.UUID,
    *,
    before_seq: int | None = None,
    after_seq: int | None = None,
    limit: int,
) -> list[Any]:
    """A page of history, oldest first, as rows with a message's attributes: after
    ``after_seq``, else before ``before_seq``, else the newest. Empty unless
    ``member_id`` is a member (an empty page is the caller's cue to check which).

    The hottest REST read: one prebuilt Core statement, the access check inside it.
    """
    connection = await session.connection()
    params: dict[str, Any] = {"session_id": session_id, "user_id": member_id, "limit": limit}
    if after_seq is not None:
        statement, params["seq"] = _MEMBER_PAGE_AFTER, after_seq
    elif before_seq is not None:
        statement, params["seq"] = _MEMBER_PAGE_BEFORE, before_seq
    else:
        statement = _MEMBER_PAGE_NEWEST
    rows = list((await connection.execute(statement, params)).all())
    return rows if after_seq is not None else rows[::-1]


async def page_before(
    session: AsyncSession, session_id: uuid.UUID, before_seq: int | None, limit: int
) -> list[Message]:
    """The ``limit`` messages just before ``before_seq`` (or the newest), oldest first."""
    query = select(Message).where(Message.session_id == session_id)
    if before_seq is not None:
        query = query.where(Message.seq < before_seq)
    rows = await session.execute(query.order_by(Message.seq.desc()).limit(limit))
    return list(reversed(rows.scalars().all()))


class Turn(NamedTuple):
    id: uuid.UUID
    seq: int
    role: str
    content: str


class TurnHeader(NamedTuple):
    """What answering a turn needs to know about its session, in one query."""

    model: str | None
    system_prompt: str | None
    status: str
    summary_covers_seq: int | None
    summary: str | None
    has_passages: bool  # any indexed chunk (document or history) to retrieve from


def _latest_summary(column: Any) -> Any:
    return (
        select(column)
        .where(Summary.session_id == ChatSession.id)
        .order_by(Summary.covers_seq.desc())
        .limit(1)
        .scalar_subquery()
    )


# Built once: the hot path of every answer runs these, and a prebuilt statement with
# bind parameters skips most of SQLAlchemy's per-statement work.
_TURN_HEADER = (
    select(
        ChatSession.model,
        ChatSession.system_prompt,
        ChatSession.status,
        _latest_summary(Summary.covers_seq),
        _latest_summary(Summary.content),
        exists().where(Chunk.session_id == ChatSession.id),
    )
    .join(SessionMember, SessionMember.session_id == ChatSession.id)
    .where(ChatSession.id == bindparam("session_id"), SessionMember.user_id == bindparam("user_id"))
)
_RECENT_TURNS = (
    select(Message.id, Message.seq, Message.role, Message.content)
    .where(Message.session_id == bindparam("session_id"), Message.deleted_at.is_(None))
    .order_by(Message.seq.desc())
    .limit(bindparam("limit"))
)
_RECENT_TURNS_BEFORE = _RECENT_TURNS.where(Message.seq < bindparam("before_seq"))


async def turn_header(
    session: AsyncSession, session_id: uuid.UUID, member_id: uuid.UUID
) -> TurnHeader | None:
    """The session's settings, latest summary and whether it has passages; None unless
    ``member_id`` is a member."""
    connection = await session.connection()
    row = (
        await connection.execute(_TURN_HEADER, {"session_id": session_id, "user_id": member_id})
    ).first()
    if row is None:
        return None
    model, system_prompt, status, covers_seq, summary, has_chunks = row
    return TurnHeader(model, system_prompt, status, covers_seq, summary, bool(has_chunks))


async def recent_turns(
    session: AsyncSession, session_id: uuid.UUID, before_seq: int | None, limit: int
) -> list[Turn]:
    """The newest ``limit`` live messages before ``before_seq`` (or the newest), oldest
    first, as plain rows: a turn's context reads hundreds and needs four columns."""
    connection = await session.connection()
    params: dict[str, Any] = {"session_id": session_id, "limit": limit}
    statement = _RECENT_TURNS
    if before_seq is not None:
        statement, params["before_seq"] = _RECENT_TURNS_BEFORE, before_seq
    rows = await connection.execute(statement, params)
    return [Turn(*row) for row in reversed(rows.all())]


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
