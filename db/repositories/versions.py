"""Versions of a message: regenerated answers, edited questions (migration 0006).

The message row holds the shown version; ``message_versions`` every alternative of a
message that has more than one. Adding a version takes the message row's lock first
(the ``version_count`` bump), so concurrent regenerations each get their own number,
and copies version 1 there when it is the second.
"""

from __future__ import annotations

import uuid
from typing import NamedTuple

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Chunk, Message, MessageVersion, Summary
from db.repositories.memories import delete_learned_from
from db.repositories.sessions import bump_history_revision
from db.types import utcnow


class NewVersion(NamedTuple):
    content: str
    model: str | None
    status: str
    error_code: str | None = None
    error_message: str | None = None
    reply_version: int | None = None


async def lock_message(
    session: AsyncSession, session_id: uuid.UUID, message_id: uuid.UUID
) -> Message | None:
    """The message, read fresh (not from the unit of work's cache)."""
    message = (
        await session.execute(
            select(Message)
            .where(Message.id == message_id, Message.session_id == session_id)
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    return message


async def add_version(
    session: AsyncSession, message: Message, new: NewVersion, *, show: bool
) -> int:
    """Store ``new`` as the message's next version and return its number; ``show`` makes
    it the shown one (the history a turn reads changes, so the revision is bumped)."""
    if show:
        await bump_history_revision(session, message.session_id)
    count = (
        await session.execute(
            update(Message)
            .where(Message.id == message.id)
            .values(version_count=Message.version_count + 1)
            .returning(Message.version_count)
        )
    ).scalar_one()
    if count == 2:
        # The first alternative: the original becomes version 1 of the table.
        await session.execute(
            insert(MessageVersion).values(
                message_id=message.id,
                version=1,
                content=message.content,
                model=message.model,
                status=message.status,
                error_code=message.error_code,
                error_message=message.error_message,
                reply_version=1 if message.role == "assistant" else None,
                created_at=message.created_at,
            )
        )
    await session.execute(
        insert(MessageVersion).values(
            message_id=message.id, version=count, created_at=utcnow(), **new._asdict()
        )
    )
    if show:
        await _show(session, message, count, new)
    await session.refresh(message)
    return count


async def select_version(session: AsyncSession, message: Message, version: int) -> bool:
    """Show ``version`` of the message; False if it has no such version."""
    if version == message.version:
        return True
    row = await get_version(session, message.id, version)
    if row is None:
        return False
    await bump_history_revision(session, message.session_id)
    await _show(
        session,
        message,
        version,
        NewVersion(row.content, row.model, row.status, row.error_code, row.error_message),
    )
    await session.refresh(message)
    return True


async def get_version(
    session: AsyncSession, message_id: uuid.UUID, version: int
) -> MessageVersion | None:
    return await session.get(MessageVersion, (message_id, version))


async def versions_of(session: AsyncSession, message_id: uuid.UUID) -> list[MessageVersion]:
    """Every stored alternative, oldest first (empty for a message with one version)."""
    rows = await session.execute(
        select(MessageVersion)
        .where(MessageVersion.message_id == message_id)
        .order_by(MessageVersion.version)
    )
    return list(rows.scalars())


async def latest_answering(
    session: AsyncSession, answer_id: uuid.UUID, question_version: int
) -> int | None:
    """The newest version of an answer that answered ``question_version`` of its question."""
    return (
        await session.execute(
            select(MessageVersion.version)
            .where(
                MessageVersion.message_id == answer_id,
                MessageVersion.reply_version == question_version,
            )
            .order_by(MessageVersion.version.desc())
            .limit(1)
        )
    ).scalar_one_or_none()


async def shows(session: AsyncSession, shown: list[tuple[uuid.UUID, int]]) -> bool:
    """Whether each ``(message id, version)`` is still the version shown; the rows are
    locked (PostgreSQL) so that no version change commits between this check and what
    the caller writes next in its transaction (what was learned from those versions)."""
    if not shown:
        return True
    rows = await session.execute(
        select(Message.id, Message.version)
        .where(Message.id.in_([message_id for message_id, _ in shown]))
        # In seq order, the order a switch of version locks them in (question, then
        # its answer): the two transactions wait on each other, never deadlock.
        .order_by(Message.seq)
        .with_for_update()
    )
    current = {row.id: row.version for row in rows}
    return all(current.get(message_id) == version for message_id, version in shown)


async def _show(session: AsyncSession, message: Message, version: int, new: NewVersion) -> None:
    """Put ``version`` in the message row, and forget what was derived from the text it
    replaces: the summaries that folded it, its passages in the history index, and the
    memory items learned from its exchange (the question, or the question an answer
    answers). The next turn folds and indexes the version shown (summaries follow the
    version); memory is learned again from the exchange now shown once its answer is."""
    await session.execute(
        update(Message)
        .where(Message.id == message.id)
        .values(
            version=version,
            content=new.content,
            model=new.model,
            status=new.status,
            error_code=new.error_code,
            error_message=new.error_message,
        )
    )
    await session.execute(
        delete(Summary).where(
            Summary.session_id == message.session_id, Summary.covers_seq >= message.seq
        )
    )
    await session.execute(
        delete(Chunk).where(
            Chunk.session_id == message.session_id, Chunk.message_seq == message.seq
        )
    )
    question_id = message.id if message.role == "user" else message.reply_to
    if question_id is not None:
        await delete_learned_from(session, question_id)
