"""``MessageService.post`` and the assistant's early start: a stored question is
always answered, an unstored one never is (both databases)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import event, func, select

from db import migrate
from db.engine import Database
from db.models import Message
from db.repositories import messages as messages_repo
from db.repositories import sessions as sessions_repo
from db.repositories import users as users_repo
from errors import ClientMsgIdTaken, Conflict, NotFound
from server.services.accounts import Principal
from server.services.messages import MessageService


class RecordingAssistant:
    """Stands in for ``Assistant``: records what happens to each prepared answer."""

    def __init__(self) -> None:
        self.prepared: list[dict[str, Any]] = []
        self.confirmed: list[str] = []
        self.abandoned = 0
        self.events: list[str] = []

    def prepare(
        self, principal: Principal, session_id: uuid.UUID, question: dict[str, Any], **_: Any
    ) -> RecordingAssistant:
        self.prepared.append(question)
        return self

    async def request_on_its_way(self) -> None:
        self.events.append("request sent")

    def confirm(self, stored: dict[str, Any], model: str | None, revision: int) -> str:
        self.confirmed.append(stored["id"])
        return "stream-1"

    def abandon(self) -> None:
        self.abandoned += 1


class BrokenFanout:
    async def message_stored(self, session_id: str, message: dict[str, Any]) -> None:
        raise RuntimeError("the bus is down")


@pytest.fixture
async def posting(database_url: str) -> Any:
    database = Database(database_url)
    await migrate.upgrade(database)
    async with database.transaction() as db:
        user = await users_repo.create_user(
            db, email=f"{uuid.uuid4().hex}@example.com", name="Ada", password_hash=None
        )
        chat = await sessions_repo.create_session(
            db, owner_id=user.id, title="t", model=None, system_prompt=None
        )
    service = MessageService(database, max_content_chars=1000)
    assistant = RecordingAssistant()
    service.assistant = assistant
    principal = Principal(user_id=user.id, name="Ada", role="user", expires_at=None)
    yield database, service, assistant, principal, chat.id
    await database.dispose()


async def stored_count(database: Database, session_id: uuid.UUID) -> int:
    async with database.read() as db:
        query = select(func.count()).select_from(Message).where(Message.session_id == session_id)
        return int((await db.execute(query)).scalar_one())


async def test_a_stored_question_is_answered_even_when_its_fan_out_fails(posting: Any) -> None:
    database, service, assistant, principal, session_id = posting
    service.fanout = BrokenFanout()

    with pytest.raises(RuntimeError):
        await service.post(principal, session_id, content="still answer me")

    assert await stored_count(database, session_id) == 1
    assert assistant.confirmed == [assistant.prepared[0]["id"]]
    assert assistant.abandoned == 0


async def test_a_refused_or_repeated_question_is_never_answered(posting: Any) -> None:
    database, service, assistant, principal, session_id = posting

    first = await service.post(principal, session_id, content="once", client_msg_id="c-1")
    again = await service.post(principal, session_id, content="once", client_msg_id="c-1")
    async with database.transaction() as db:
        await sessions_repo.update_session(db, session_id, status="closed")
    with pytest.raises(Conflict):
        await service.post(principal, session_id, content="too late")

    assert first.stream_id == "stream-1" and again.stream_id is None
    assert again.message["id"] == first.message["id"]
    assert assistant.confirmed == [first.message["id"]]
    assert assistant.abandoned == 2
    assert await stored_count(database, session_id) == 1


async def test_a_repeated_client_msg_id_takes_no_seq(posting: Any) -> None:
    # On PostgreSQL the seq bump and the insert are one statement: the insert's
    # unique violation must undo the bump too, or history would have a hole.
    _, service, _, principal, session_id = posting

    first = await service.post(principal, session_id, content="a", client_msg_id="k")
    again = await service.post(principal, session_id, content="a", client_msg_id="k")
    second = await service.post(principal, session_id, content="b")

    assert again.created is False and again.message["seq"] == first.message["seq"] == 1
    assert second.message["seq"] == 2


async def test_a_taken_client_msg_id_is_told_in_parleys_words(posting: Any) -> None:
    # The repository converts the database's unique violation; no SQLAlchemy error
    # reaches the service.
    database, service, _, principal, session_id = posting
    await service.post(principal, session_id, content="a", client_msg_id="k")

    with pytest.raises(ClientMsgIdTaken):
        async with database.single_statement() as db:
            await messages_repo.append_member_message(
                db,
                session_id=session_id,
                user_id=principal.user_id,
                content="a",
                client_msg_id="k",
                message_id=uuid.uuid4(),
            )


async def test_a_members_message_is_stored_by_one_statement(posting: Any) -> None:
    # Every answer's first token waits on this store: no BEGIN, no COMMIT, no second
    # statement on either back end (SQLite's trigger records the seq on the session).
    database, service, _, principal, session_id = posting
    await service.post(principal, session_id, content="the pool has a connection now")
    await database.closed_in_background()

    async with statements_sent(database) as statements:
        posted = await service.post(principal, session_id, content="one trip")

    # (SQLite's trace names a statement with RETURNING again for each step it runs.)
    assert len(set(statements)) == 1 and "INSERT INTO messages" in statements[0], statements
    async with database.read() as db:
        chat = await sessions_repo.get_session(db, session_id)
    assert chat is not None and chat.last_seq == posted.message["seq"] == 2


@contextlib.asynccontextmanager
async def statements_sent(database: Database) -> AsyncIterator[list[str]]:
    """The SQL statements the database receives meanwhile (not those a trigger runs)."""
    statements: list[str] = []
    if database.dialect == "sqlite":
        # The store talks to aiosqlite directly: ask SQLite itself. The test's posts
        # are sequential, so the pool's one connection serves them all.
        async with database.engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
        await driver.set_trace_callback(statements.append)
        try:
            yield statements
        finally:
            await driver.set_trace_callback(None)
        return

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(database.engine.sync_engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", record)


async def test_a_message_revives_an_expired_session_and_a_stranger_stores_nothing(
    posting: Any,
) -> None:
    database, service, _, principal, session_id = posting
    await service.post(principal, session_id, content="before it expired")
    async with database.transaction() as db:
        await sessions_repo.update_session(db, session_id, status="expired")
        stranger = await users_repo.create_user(
            db, email=f"{uuid.uuid4().hex}@example.com", name="Eve", password_hash=None
        )

    posted = await service.post(principal, session_id, content="back again")
    eve = Principal(user_id=stranger.id, name="Eve", role="user", expires_at=None)
    with pytest.raises(NotFound):
        await service.post(eve, session_id, content="let me in")

    async with database.read() as db:
        chat = await sessions_repo.get_session(db, session_id)
    assert chat is not None
    assert chat.status == "active"
    assert chat.last_seq == posted.message["seq"] == 2
    assert await stored_count(database, session_id) == 2


async def test_an_answer_stored_in_an_expired_session_leaves_it_expired(posting: Any) -> None:
    # Only a member's message brings a session back; the assistant's answer that
    # finishes after the session expired takes the next seq and nothing more.
    database, service, _, principal, session_id = posting
    await service.post(principal, session_id, content="question")
    async with database.transaction() as db:
        await sessions_repo.update_session(db, session_id, status="expired")
    async with database.transaction() as db:
        answer = await messages_repo.append_message(
            db, session_id=session_id, role="assistant", user_id=None, content="answer"
        )

    async with database.read() as db:
        chat = await sessions_repo.get_session(db, session_id)
    assert chat is not None
    assert chat.status == "expired"
    assert chat.last_seq == answer.message.seq == 2


async def test_on_sqlite_the_answers_request_leaves_before_the_question_is_stored(
    posting: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    database, service, assistant, principal, session_id = posting
    real_append = messages_repo.append_member_message

    async def recorded_append(*args: Any, **kwargs: Any) -> Any:
        assistant.events.append("stored")
        return await real_append(*args, **kwargs)

    monkeypatch.setattr(messages_repo, "append_member_message", recorded_append)
    await service.post(principal, session_id, content="answer me")
    await service.post(principal, session_id, content="no answer", reply="none")

    if database.dialect == "sqlite":
        assert assistant.events == ["request sent", "stored", "stored"]
    else:  # one round trip to PostgreSQL, started beside the request
        assert assistant.events == ["stored", "stored"]


# PostgreSQL stores at once, beside the request, so only SQLite has a "before".
@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_post_cancelled_before_its_question_is_stored_leaves_nothing(
    posting: Any,
) -> None:
    database, service, assistant, principal, session_id = posting
    waiting = asyncio.Event()

    async def request_still_on_its_way() -> None:
        waiting.set()
        await asyncio.Event().wait()

    assistant.request_on_its_way = request_still_on_its_way  # type: ignore[method-assign]
    post = asyncio.create_task(service.post(principal, session_id, content="never mind"))
    await waiting.wait()
    post.cancel()
    with pytest.raises(asyncio.CancelledError):
        await post

    assert await stored_count(database, session_id) == 0
    assert assistant.abandoned == 1 and assistant.confirmed == []


class RecordingFanout:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def message_stored(self, session_id: str, message: dict[str, Any]) -> None:
        self.sent.append(message["id"])


async def test_a_post_cancelled_while_its_question_is_stored_still_answers_it(
    posting: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The member's connection went while the statement ran (a dropped WebSocket, a
    # shutdown): the question is stored, so the room must see it and its answer.
    database, service, assistant, principal, session_id = posting
    fanout = service.fanout = RecordingFanout()
    real_append = messages_repo.append_member_message
    statement_ran = asyncio.Event()
    release = asyncio.Event()

    async def append_then_wait(*args: Any, **kwargs: Any) -> Any:
        appended = await real_append(*args, **kwargs)
        statement_ran.set()
        await release.wait()  # the post is cancelled here, after the statement
        return appended

    monkeypatch.setattr(messages_repo, "append_member_message", append_then_wait)
    post = asyncio.create_task(service.post(principal, session_id, content="are you there?"))
    await statement_ran.wait()
    post.cancel()
    with pytest.raises(asyncio.CancelledError):
        await post
    release.set()
    await service.landed(5)

    question_id = assistant.prepared[0]["id"]
    assert await stored_count(database, session_id) == 1
    assert assistant.confirmed == [question_id] and assistant.abandoned == 0
    assert fanout.sent == [question_id]
