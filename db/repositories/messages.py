"""Messages: gap-free per-session ``seq`` assigned inside the insert's transaction."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import bindparam, case, exists, insert, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import ChatSession, Chunk, Message, SessionMember, Summary
from db.one_trip import OneTripStatement
from db.repositories.sessions import bump_history_revision
from db.types import utcnow
from errors import ClientMsgIdTaken


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


async def find_answer(
    session: AsyncSession, session_id: uuid.UUID, question_id: uuid.UUID
) -> Message | None:
    """The assistant's stored answer to ``question_id``, if any."""
    return (
        await session.execute(
            select(Message)
            .where(
                Message.session_id == session_id,
                Message.reply_to == question_id,
                Message.role == "assistant",
            )
            .limit(1)
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
    error: tuple[str, str] | None = None,
) -> Appended:
    """Store a message with the session's next ``seq``.

    Bumping ``chat_sessions.last_seq`` takes the session row's write lock (PostgreSQL)
    or the database write lock (SQLite) until commit, so concurrent writers into one
    session, from any node, queue here and each gets the next number. A unique
    ``client_msg_id`` collision rolls the whole transaction back, bump included, so
    no ``seq`` is ever skipped, and raises ``ClientMsgIdTaken`` (see
    ``server.services.messages``).
    """
    appended = await _append(
        session,
        _BY_ANYONE,
        {"sid": session_id},
        {
            "id": message_id or uuid.uuid4(),
            "session_id": session_id,
            "role": role,
            "user_id": user_id,
            "content": content,
            "client_msg_id": client_msg_id,
            "status": status,
            "model": model,
            "reply_to": reply_to,
            "error_code": error[0] if error else None,
            "error_message": error[1] if error else None,
        },
    )
    if appended is None:
        raise LookupError(f"no session {session_id}")
    return appended


async def append_answer(
    session: AsyncSession,
    *,
    session_id: uuid.UUID,
    content: str,
    status: str,
    model: str | None,
    reply_to: uuid.UUID | None,
    error: tuple[str, str] | None = None,
) -> Appended:
    """Store the assistant's answer (``complete``, ``cancelled`` or ``error``, the last
    with its error's code and message, and perhaps no text)."""
    return await append_message(
        session,
        session_id=session_id,
        role="assistant",
        user_id=None,
        content=content,
        status=status,
        model=model,
        reply_to=reply_to,
        error=error,
    )


async def append_member_message(
    session: AsyncSession,
    *,
    session_id: uuid.UUID,
    user_id: uuid.UUID,
    content: str,
    client_msg_id: str | None,
    message_id: uuid.UUID,
) -> Appended | None:
    """A member's message with the session's next ``seq``, and the session's model.

    None when ``user_id`` is not a member or the session is closed (the caller reads
    which): one statement checks both, reopens an expired session and takes the seq.
    Otherwise as ``append_message``.
    """
    return await _append(
        session,
        _BY_MEMBER,
        {"sid": session_id, "uid": user_id},
        {
            "id": message_id,
            "session_id": session_id,
            "role": "user",
            "user_id": user_id,
            "content": content,
            "client_msg_id": client_msg_id,
            "status": "complete",
        },
    )


_NEXT_SEQ = (
    update(ChatSession)
    .where(ChatSession.id == bindparam("sid"))
    .values(last_seq=ChatSession.last_seq + 1, last_activity_at=bindparam("now"))
    .returning(ChatSession.last_seq, ChatSession.model, ChatSession.history_revision)
)
# A member may write into a session that is not closed.
_MEMBER_MAY_WRITE = (
    ChatSession.id == bindparam("sid"),
    ChatSession.status != "closed",
    exists().where(
        SessionMember.session_id == ChatSession.id,
        SessionMember.user_id == bindparam("uid"),
    ),
)
_NEXT_SEQ_FOR_MEMBER = (
    update(ChatSession)
    .where(*_MEMBER_MAY_WRITE)
    .values(
        last_seq=ChatSession.last_seq + 1,
        last_activity_at=bindparam("now"),
        status=case((ChatSession.status == "expired", "active"), else_=ChatSession.status),
    )
    .returning(ChatSession.last_seq, ChatSession.model, ChatSession.history_revision)
)


class Appended(NamedTuple):
    """A stored message and what its session said as it took the message's seq."""

    message: Message
    session_model: str | None
    history_revision: int  # see ``ChatSession.history_revision``


_INSERTED_COLUMNS = (
    "id",
    "session_id",
    "role",
    "user_id",
    "content",
    "client_msg_id",
    "status",
    "model",
    "reply_to",
    "error_code",
    "error_message",
)


def _at_once(next_seq: Any) -> Any:
    """PostgreSQL: ``next_seq`` and the insert as one statement (data-modifying CTEs),
    so that storing a message is one round trip, atomic on its own (see
    ``Database.single_statement``). No row when ``next_seq`` matched no session."""
    bumped = next_seq.cte("bumped")
    table = Message.__table__
    source = select(
        *(bindparam(f"v_{name}", type_=table.c[name].type) for name in _INSERTED_COLUMNS),
        bumped.c.last_seq,
        bindparam("now", type_=table.c.created_at.type),
    )
    inserted = (
        insert(Message)
        .from_select([*_INSERTED_COLUMNS, "seq", "created_at"], source)
        .returning(Message.id)
        .cte("inserted")
    )
    return select(bumped.c.last_seq, bumped.c.model, bumped.c.history_revision).join_from(
        bumped, inserted, true()
    )


def _at_once_sqlite() -> Any:
    """SQLite, a member's message: the insert takes ``last_seq + 1`` from the session
    row it checks, and migration 0004's trigger records that seq on the session, so it
    is one statement too. No row when the session is closed or the user not a member."""
    table = Message.__table__
    source = select(
        *(bindparam(f"v_{name}", type_=table.c[name].type) for name in _INSERTED_COLUMNS),
        ChatSession.last_seq + 1,
        bindparam("now", type_=table.c.created_at.type),
    ).where(*_MEMBER_MAY_WRITE)

    def of_session(column: Any) -> Any:
        return select(column).where(ChatSession.id == bindparam("sid")).scalar_subquery()

    return (
        insert(Message)
        .from_select([*_INSERTED_COLUMNS, "seq", "created_at"], source)
        .returning(
            Message.seq, of_session(ChatSession.model), of_session(ChatSession.history_revision)
        )
    )


class _Appends(NamedTuple):
    bump: Any  # the seq bump alone; the insert follows it
    at_once: dict[str, Any]  # per dialect: the bump and the insert in one statement


_BY_ANYONE = _Appends(_NEXT_SEQ, {"postgresql": _at_once(_NEXT_SEQ)})
_BY_MEMBER = _Appends(
    _NEXT_SEQ_FOR_MEMBER,
    {
        "postgresql": _at_once(_NEXT_SEQ_FOR_MEMBER),
        "sqlite": OneTripStatement(_at_once_sqlite()),
    },
)


async def _append(
    session: AsyncSession, appends: _Appends, params: dict[str, Any], values: dict[str, Any]
) -> Appended | None:
    """Take the next seq (None if the bump matched no session), then insert.

    Prebuilt Core statements: every message, and every answer's first token, waits on
    them, and the ORM's unit of work would about double their cost. A member's message
    is one statement on both back ends (see ``Database.single_statement``); an
    assistant's answer on SQLite is the bump, then the insert, in its transaction.
    """
    try:
        return await _append_rows(session, appends, params, values)
    except IntegrityError as exc:
        # The one unique key a caller can collide with: (session_id, client_msg_id).
        if values.get("client_msg_id") is None:
            raise
        raise ClientMsgIdTaken(values["client_msg_id"]) from exc


async def _append_rows(
    session: AsyncSession, appends: _Appends, params: dict[str, Any], values: dict[str, Any]
) -> Appended | None:
    now = utcnow()
    connection = await session.connection()
    row = {name: None for name in _INSERTED_COLUMNS} | values | {"created_at": now}
    at_once = appends.at_once.get(connection.dialect.name)
    if at_once is not None:
        inserted = {f"v_{name}": row[name] for name in _INSERTED_COLUMNS}
        arguments = {**params, **inserted, "now": now}
        if isinstance(at_once, OneTripStatement):
            bumped = next(iter(await at_once.fetch(connection, arguments)), None)
        else:
            bumped = (await connection.execute(at_once, arguments)).first()
    else:
        bumped = (await connection.execute(appends.bump, {**params, "now": now})).first()
    if bumped is None:
        return None
    seq, session_model, revision = bumped
    row["seq"] = seq
    if at_once is None:
        await connection.execute(insert(Message), row)
    return Appended(Message(**row), session_model, revision)


class _Pages(NamedTuple):
    """The three shapes of a history page, prebuilt once per access rule."""

    newest: Any
    before: Any
    after: Any

    @classmethod
    def of(cls, base: Any) -> _Pages:
        newest = base.order_by(Message.seq.desc()).limit(bindparam("limit"))
        after = base.where(Message.seq > bindparam("seq")).order_by(Message.seq)
        return cls(
            newest, newest.where(Message.seq < bindparam("seq")), after.limit(bindparam("limit"))
        )


# Rows carry a message's attributes (``server.services.wire.message_to_wire`` takes
# them): a page is a hot read, and building ORM objects for it cost more than the query.
_PAGE = select(
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
    Message.version,
    Message.version_count,
    Message.error_code,
    Message.error_message,
).where(Message.session_id == bindparam("session_id"))
_PAGES = _Pages.of(_PAGE)
_MEMBER_PAGES = _Pages.of(
    _PAGE.where(
        exists().where(
            SessionMember.session_id == bindparam("session_id"),
            SessionMember.user_id == bindparam("user_id"),
        )
    )
)


async def _page(
    session: AsyncSession,
    pages: _Pages,
    params: dict[str, Any],
    before_seq: int | None,
    after_seq: int | None,
) -> list[Any]:
    """Oldest first: after ``after_seq``, else before ``before_seq``, else the newest."""
    if after_seq is not None:
        statement, params["seq"] = pages.after, after_seq
    elif before_seq is not None:
        statement, params["seq"] = pages.before, before_seq
    else:
        statement = pages.newest
    connection = await session.connection()
    rows = list((await connection.execute(statement, params)).all())
    return rows if after_seq is not None else rows[::-1]


async def member_page(
    session: AsyncSession,
    session_id: uuid.UUID,
    member_id: uuid.UUID,
    *,
    before_seq: int | None = None,
    after_seq: int | None = None,
    limit: int,
) -> list[Any]:
    """A page of history (see ``_page``), empty unless ``member_id`` is a member: an
    empty page is the caller's cue to check which. The access check is inside the
    page's own query, so the hottest REST read is one round trip."""
    params = {"session_id": session_id, "user_id": member_id, "limit": limit}
    return await _page(session, _MEMBER_PAGES, params, before_seq, after_seq)


async def page_before(
    session: AsyncSession, session_id: uuid.UUID, before_seq: int | None, limit: int
) -> list[Any]:
    """The ``limit`` messages just before ``before_seq`` (or the newest), oldest first."""
    params = {"session_id": session_id, "limit": limit}
    return await _page(session, _PAGES, params, before_seq, None)


async def page_after(
    session: AsyncSession, session_id: uuid.UUID, after_seq: int, limit: int
) -> list[Any]:
    params = {"session_id": session_id, "limit": limit}
    return await _page(session, _PAGES, params, None, after_seq)


class Turn(NamedTuple):
    id: uuid.UUID
    seq: int
    role: str
    content: str
    client_msg_id: str | None


class TurnHeader(NamedTuple):
    """What answering a turn needs to know about its session, in one query."""

    model: str | None
    system_prompt: str | None
    status: str
    summary_covers_seq: int | None
    summary: str | None
    has_passages: bool  # any indexed chunk (document or history) to retrieve from
    already_sent: bool  # another message holds the question's client_msg_id
    last_seq: int
    history_revision: int


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
        exists().where(
            Message.session_id == ChatSession.id,
            Message.client_msg_id == bindparam("retry_key"),
            Message.id != bindparam("question_id"),
        ),
        ChatSession.last_seq,
        ChatSession.history_revision,
    )
    .join(SessionMember, SessionMember.session_id == ChatSession.id)
    .where(ChatSession.id == bindparam("session_id"), SessionMember.user_id == bindparam("user_id"))
)
_RECENT_TURNS = (
    select(Message.id, Message.seq, Message.role, Message.content, Message.client_msg_id)
    .where(
        Message.session_id == bindparam("session_id"),
        Message.deleted_at.is_(None),
        Message.seq < bindparam("before_seq"),
    )
    .order_by(Message.seq.desc())
    .limit(bindparam("limit"))
)


async def turn_header(
    session: AsyncSession,
    session_id: uuid.UUID,
    member_id: uuid.UUID,
    *,
    question_id: uuid.UUID,
    retry_key: str | None,
) -> TurnHeader | None:
    """The session's settings, latest summary, whether it has passages, and whether a
    message other than ``question_id`` already holds ``retry_key``; None unless
    ``member_id`` is a member."""
    connection = await session.connection()
    params = {
        "session_id": session_id,
        "user_id": member_id,
        "question_id": question_id,
        "retry_key": retry_key,
    }
    row = (await connection.execute(_TURN_HEADER, params)).first()
    if row is None:
        return None
    model, system_prompt, status, covers_seq, summary, has_chunks, sent, last_seq, revision = row
    return TurnHeader(
        model,
        system_prompt,
        status,
        covers_seq,
        summary,
        bool(has_chunks),
        bool(sent),
        last_seq,
        revision,
    )


async def recent_turns(
    session: AsyncSession, session_id: uuid.UUID, before_seq: int, limit: int
) -> list[Turn]:
    """The newest ``limit`` live messages before ``before_seq``, oldest first, as plain
    rows: a turn's context reads hundreds and needs a few columns."""
    connection = await session.connection()
    params = {"session_id": session_id, "limit": limit, "before_seq": before_seq}
    rows = await connection.execute(_RECENT_TURNS, params)
    return [Turn(*row) for row in reversed(rows.all())]


async def get_message(
    session: AsyncSession, session_id: uuid.UUID, message_id: uuid.UUID
) -> Message | None:
    message = await session.get(Message, message_id)
    return message if message is not None and message.session_id == session_id else None


async def soft_delete(
    session: AsyncSession, message: Message, deleted_by: uuid.UUID, now: datetime
) -> None:
    await bump_history_revision(session, message.session_id)
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
    await bump_history_revision(session, session_id)
    summary = Summary(session_id=session_id, covers_seq=covers_seq, content=content, tokens=tokens)
    session.add(summary)
    await session.flush()
    return summary
