"""Storing an answer that is a version: a regeneration's, or the new answer to an
edited question (``server.services.versions``), and what a failed answer stores."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from db.repositories import messages as messages_repo
from db.repositories import versions as versions_repo
from db.repositories.versions import NewVersion
from errors import ParleyError
from server.services.wire import message_to_wire


async def store_version(
    session: AsyncSession, session_id: uuid.UUID, question_id: uuid.UUID, new: NewVersion
) -> tuple[dict[str, Any], int | None, int, bool]:
    """``new`` as the next version of the question's stored answer, shown, or as the
    answer itself when there is none yet (an edit before the first answer was stored).

    Returns the message, its seq when it was appended (None for a version: it keeps its
    place), the history revision it was appended under, and whether a version was added.
    """
    answer = await messages_repo.find_answer(session, session_id, question_id)
    if answer is None:
        failure = (new.error_code, new.error_message or "") if new.error_code else None
        appended = await messages_repo.append_answer(
            session,
            session_id=session_id,
            content=new.content,
            status=new.status,
            model=new.model,
            reply_to=question_id,
            error=failure,
        )
        wire = message_to_wire(appended.message)
        return wire, appended.message.seq, appended.history_revision, False
    await versions_repo.add_version(session, answer, new, show=True)
    return message_to_wire(answer), None, 0, True


def failure_of(error: ParleyError | None) -> tuple[str, str]:
    """What a failed answer stores as its error: the code and message the room was told."""
    if error is None:
        return ("internal", "the assistant failed")
    return (error.code, error.message)
