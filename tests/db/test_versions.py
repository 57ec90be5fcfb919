"""Message versions in the database (migration 0008), on both back ends: every
alternative kept, the message row showing the selected one, a failure stored with why."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import select

from db import migrate
from db.engine import Database
from db.models import ChatSession, Chunk
from db.repositories import messages as messages_repo
from db.repositories import retrieval as retrieval_repo
from db.repositories import sessions as sessions_repo
from db.repositories import users as users_repo
from db.repositories import versions as versions_repo
from db.repositories.retrieval import HistoryPiece
from db.repositories.versions import NewVersion
from server.services.wire import message_to_wire


@pytest.fixture
async def answered(database_url: str) -> AsyncIterator[tuple[Database, uuid.UUID, Any, Any]]:
    database = Database(database_url)
    await migrate.upgrade(database)
    async with database.transaction() as db:
        user = await users_repo.create_user(
            db, email=f"{uuid.uuid4().hex}@example.com", name="Ada", password_hash=None
        )
        chat = await sessions_repo.create_session(
            db, owner_id=user.id, title="t", model=None, system_prompt=None
        )
        question = await messages_repo.append_message(
            db, session_id=chat.id, role="user", user_id=user.id, content="What is 2+2?"
        )
        answer = await messages_repo.append_answer(
            db,
            session_id=chat.id,
            content="",
            status="error",
            model="m",
            reply_to=question.message.id,
            error=("upstream_error", "the model provider failed"),
        )
    yield database, chat.id, question.message, answer.message
    await database.dispose()


async def revision(database: Database, session_id: uuid.UUID) -> int:
    async with database.read() as db:
        query = select(ChatSession.history_revision).where(ChatSession.id == session_id)
        return int((await db.execute(query)).scalar_one())


async def test_a_failed_answer_is_stored_with_its_error(answered: Any) -> None:
    database, session_id, _, _ = answered
    async with database.read() as db:
        page = await messages_repo.page_before(db, session_id, None, 10)
    wire = message_to_wire(page[-1])
    assert wire["status"] == "error"
    assert wire["content"] == ""
    assert wire["error"] == {"code": "upstream_error", "message": "the model provider failed"}
    assert (wire["version"], wire["version_count"]) == (1, 1)


async def test_versions_are_kept_and_the_row_shows_the_selected_one(answered: Any) -> None:
    database, session_id, _, answer = answered
    before = await revision(database, session_id)
    async with database.transaction() as db:
        message = await versions_repo.lock_message(db, session_id, answer.id)
        assert message is not None
        number = await versions_repo.add_version(
            db, message, NewVersion("4", "m2", "complete", reply_version=1), show=True
        )
    assert number == 2
    assert await revision(database, session_id) == before + 1
    async with database.read() as db:
        page = await messages_repo.page_before(db, session_id, None, 10)
        stored = await versions_repo.versions_of(db, answer.id)
    wire = message_to_wire(page[-1])
    assert (wire["content"], wire["status"], wire["model"]) == ("4", "complete", "m2")
    assert (wire["version"], wire["version_count"]) == (2, 2)
    assert "error" not in wire
    assert [(v.version, v.content, v.status, v.error_code) for v in stored] == [
        (1, "", "error", "upstream_error"),
        (2, "4", "complete", None),
    ]

    async with database.transaction() as db:
        message = await versions_repo.lock_message(db, session_id, answer.id)
        assert message is not None
        assert await versions_repo.select_version(db, message, 1)
        assert not await versions_repo.select_version(db, message, 7)
    async with database.read() as db:
        page = await messages_repo.page_before(db, session_id, None, 10)
        turns = await messages_repo.recent_turns(db, session_id, 10, 10)
    wire = message_to_wire(page[-1])
    assert (wire["version"], wire["version_count"], wire["status"]) == (1, 2, "error")
    assert wire["error"]["code"] == "upstream_error"
    # What a turn reads is the version shown.
    assert turns[-1].content == ""


async def test_concurrent_versions_each_get_their_own_number(answered: Any) -> None:
    database, session_id, _, answer = answered

    async def regenerate(text: str) -> int:
        async with database.transaction() as db:
            message = await versions_repo.lock_message(db, session_id, answer.id)
            assert message is not None
            return await versions_repo.add_version(
                db, message, NewVersion(text, "m", "complete"), show=False
            )

    numbers = await asyncio.gather(*(regenerate(f"answer {i}") for i in range(4)))
    assert sorted(numbers) == [2, 3, 4, 5]
    async with database.read() as db:
        stored = await versions_repo.versions_of(db, answer.id)
    assert [v.version for v in stored] == [1, 2, 3, 4, 5]


async def test_an_answers_version_for_a_question_version(answered: Any) -> None:
    database, session_id, _, answer = answered
    async with database.transaction() as db:
        message = await versions_repo.lock_message(db, session_id, answer.id)
        assert message is not None
        await versions_repo.add_version(
            db, message, NewVersion("a", "m", "complete", reply_version=2), show=True
        )
        await versions_repo.add_version(
            db, message, NewVersion("b", "m", "complete", reply_version=1), show=True
        )
        assert await versions_repo.latest_answering(db, answer.id, 1) == 3
        assert await versions_repo.latest_answering(db, answer.id, 2) == 2
        assert await versions_repo.latest_answering(db, answer.id, 3) is None


async def test_showing_another_version_forgets_the_summary_and_passages_of_the_old_one(
    answered: Any,
) -> None:
    database, session_id, question, answer = answered
    async with database.transaction() as db:
        await messages_repo.store_summary(db, session_id, answer.seq, "Ada asked; it failed", 5)
        earlier = await messages_repo.store_summary(db, session_id, question.seq - 1, "old", 1)
        await retrieval_repo.index_history(
            db,
            session_id,
            [
                HistoryPiece(seq=question.seq, ordinal=0, role="user", text="What is 2+2?"),
                HistoryPiece(seq=answer.seq, ordinal=0, role="assistant", text="failed"),
            ],
        )
    async with database.transaction() as db:
        message = await versions_repo.lock_message(db, session_id, answer.id)
        assert message is not None
        await versions_repo.add_version(db, message, NewVersion("4", "m", "complete"), show=True)
    async with database.read() as db:
        summary = await messages_repo.latest_summary(db, session_id)
        chunks = (
            await db.execute(select(Chunk.message_seq).where(Chunk.session_id == session_id))
        ).all()
    # The summary that folded the replaced text is gone; the one before it stays.
    assert summary is not None and summary.id == earlier.id
    assert [row[0] for row in chunks] == [question.seq]
