"""Members' messages into one session, many at once: one transaction, one seq bump.

Group commit (issue 19): a busy room's messages were each their own transaction, and
the session row's lock (PostgreSQL) or the write lock (SQLite) let one through at a
time. ``append_member_batch`` stores a batch with one bump of ``last_seq`` by the
number of new rows and one multi-row insert, while each message keeps the outcome it
would have had alone (``server/services/message_commits.py`` decides what a batch is).
"""

from __future__ import annotations

import uuid
from typing import Any, NamedTuple

from sqlalchemy import and_, bindparam, case, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import ChatSession, Message, SessionMember
from db.types import utcnow
from errors import ClientMsgIdTaken


class BatchItem(NamedTuple):
    message_id: uuid.UUID
    user_id: uuid.UUID
    content: str
    client_msg_id: str | None


class Outcome(NamedTuple):
    """One item's result: ``message`` is None when the item may not be written (not a
    member, or the session closed: the caller reads which); ``created`` is False when
    ``message`` is the row that already held the item's ``client_msg_id``."""

    message: Message | None
    created: bool


class BatchAppended(NamedTuple):
    outcomes: list[Outcome]  # one per item, in the items' order
    session_model: str | None
    history_revision: int  # what the session said as the batch took its seqs


# The session's state and which of the authors are members, in one read.
_STATUS_AND_MEMBERS = (
    select(
        ChatSession.status,
        ChatSession.model,
        ChatSession.history_revision,
        SessionMember.user_id,
    )
    .outerjoin(
        SessionMember,
        and_(
            SessionMember.session_id == ChatSession.id,
            SessionMember.user_id.in_(bindparam("uids", expanding=True)),
        ),
    )
    .where(ChatSession.id == bindparam("sid"))
)
_HELD = select(Message).where(
    Message.session_id == bindparam("sid"),
    Message.client_msg_id.in_(bindparam("keys", expanding=True)),
)
# The seqs of ``n`` rows at once; the session row stays locked (PostgreSQL) until the
# commit, so a writer on another node queues behind the whole batch and seq has no gap.
_BUMP = (
    update(ChatSession)
    .where(ChatSession.id == bindparam("sid"), ChatSession.status != "closed")
    .values(
        last_seq=ChatSession.last_seq + bindparam("n"),
        last_activity_at=bindparam("now"),
        status=case((ChatSession.status == "expired", "active"), else_=ChatSession.status),
    )
    .returning(ChatSession.last_seq, ChatSession.model, ChatSession.history_revision)
)


# PostgreSQL: the bump and the insert as one statement (data-modifying CTEs, the rows
# as arrays), run outside a transaction after the reads: three round trips became one,
# and the session row is locked for one statement instead of until a COMMIT. What the
# reads found is checked again inside it (not closed; every new row's author still a
# member); if that no longer holds, no row comes back and the batch goes one by one.
_AT_ONCE_PG = text(
    """
    WITH bumped AS (
        UPDATE chat_sessions
        SET last_seq = last_seq + CAST(:n AS integer),
            last_activity_at = CAST(:now AS timestamptz),
            status = CASE WHEN status = 'expired' THEN 'active' ELSE status END
        WHERE id = CAST(:sid AS uuid) AND status != 'closed'
          AND (SELECT count(*) FROM session_members
               WHERE session_id = CAST(:sid AS uuid)
                 AND user_id = ANY(CAST(:authors AS uuid[]))) = CAST(:author_count AS bigint)
        RETURNING last_seq, model, history_revision
    ), inserted AS (
        INSERT INTO messages
            (id, session_id, seq, role, user_id, content, client_msg_id, status, created_at)
        SELECT v.id, CAST(:sid AS uuid), bumped.last_seq - CAST(:n AS integer) + v.ord,
               'user', v.user_id, v.content, v.client_msg_id, 'complete',
               CAST(:now AS timestamptz)
        FROM bumped, unnest(
            CAST(:ids AS uuid[]), CAST(:user_ids AS uuid[]),
            CAST(:contents AS text[]), CAST(:keys AS varchar[])
        ) WITH ORDINALITY AS v(id, user_id, content, client_msg_id, ord)
        RETURNING 1
    )
    SELECT last_seq, model, history_revision FROM bumped
    """
)


async def append_member_batch(
    session: AsyncSession, session_id: uuid.UUID, items: list[BatchItem]
) -> BatchAppended | None:
    """Store ``items`` in their order with consecutive seqs: on SQLite inside the
    caller's transaction; on PostgreSQL in a session of single statements
    (``Database.single_statement``), the write being one of them. None when the
    session changed between the reads and the write (PostgreSQL): store them one by
    one.

    Each item is judged as ``append_member_message`` judges one: refused if its author
    is not a member or the session is closed; a ``client_msg_id`` already stored (or
    taken by an earlier item of the batch) gives back that row, not a new one. A row
    stored meanwhile by another node under the same ``client_msg_id`` raises
    ``ClientMsgIdTaken``: the transaction is then to be rolled back and the items
    stored one by one, so that only the offender learns of it.
    """
    connection = await session.connection()
    sid = {"sid": session_id}
    uids = sorted({item.user_id for item in items})
    rows = (await connection.execute(_STATUS_AND_MEMBERS, {**sid, "uids": uids})).all()
    if not rows or rows[0].status == "closed":
        return BatchAppended([Outcome(None, False)] * len(items), None, 0)
    header = rows[0]
    members = {row.user_id for row in rows if row.user_id is not None}
    keys = sorted({i.client_msg_id for i in items if i.client_msg_id is not None})
    held: dict[str, Message] = {}
    if keys:
        found = (await session.execute(_HELD, {**sid, "keys": keys})).scalars()
        held = {m.client_msg_id: m for m in found if m.client_msg_id is not None}
    outcomes: list[Outcome] = []
    new: list[tuple[int, BatchItem]] = []
    for item in items:
        if item.user_id not in members:
            outcomes.append(Outcome(None, False))
        elif item.client_msg_id is not None and item.client_msg_id in held:
            outcomes.append(Outcome(held[item.client_msg_id], False))
        else:
            outcomes.append(Outcome(None, True))  # its row comes below
            new.append((len(outcomes) - 1, item))
            if item.client_msg_id is not None:
                held[item.client_msg_id] = _row(item, session_id, 0, None)  # for its repeats
    if not new:
        return BatchAppended(outcomes, header.model, header.history_revision)
    now = utcnow()
    try:
        if connection.dialect.name == "postgresql":
            authors = sorted({item.user_id for _, item in new})
            arguments = {
                **sid,
                "n": len(new),
                "now": now,
                "authors": authors,
                "author_count": len(authors),
                "ids": [item.message_id for _, item in new],
                "user_ids": [item.user_id for _, item in new],
                "contents": [item.content for _, item in new],
                "keys": [item.client_msg_id for _, item in new],
            }
            bumped = (await connection.execute(_AT_ONCE_PG, arguments)).first()
        else:
            bumped = (await connection.execute(_BUMP, {**sid, "n": len(new), "now": now})).first()
    except IntegrityError as exc:
        raise ClientMsgIdTaken("a client_msg_id of the batch") from exc
    if bumped is None:  # closed, or an author removed, since the reads
        return None
    last_seq, model, revision = bumped
    first = last_seq - len(new) + 1
    rows_out: list[dict[str, Any]] = []
    for offset, (at, item) in enumerate(new):
        message = _row(item, session_id, first + offset, now)
        outcomes[at] = Outcome(message, True)
        if item.client_msg_id is not None:
            held[item.client_msg_id] = message
        rows_out.append(_values(message))
    # Repeats inside the batch point at the row their first copy got.
    for at, item in enumerate(items):
        if not outcomes[at].created and outcomes[at].message is not None:
            assert item.client_msg_id is not None
            outcomes[at] = Outcome(held[item.client_msg_id], False)
    if connection.dialect.name != "postgresql":
        try:
            await connection.execute(insert(Message), rows_out)
        except IntegrityError as exc:
            raise ClientMsgIdTaken("a client_msg_id of the batch") from exc
    return BatchAppended(outcomes, model, revision)


def _row(item: BatchItem, session_id: uuid.UUID, seq: int, now: Any) -> Message:
    return Message(
        id=item.message_id,
        session_id=session_id,
        seq=seq,
        role="user",
        user_id=item.user_id,
        content=item.content,
        client_msg_id=item.client_msg_id,
        status="complete",
        created_at=now,
    )


_COLUMNS = ("id", "session_id", "seq", "role", "user_id", "content", "client_msg_id")


def _values(message: Message) -> dict[str, Any]:
    row = {name: getattr(message, name) for name in _COLUMNS}
    return row | {
        "status": "complete",
        "created_at": message.created_at,
        "model": None,
        "reply_to": None,
        "error_code": None,
        "error_message": None,
    }
