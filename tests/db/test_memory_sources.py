"""Migration 0009: ``memories.source_message_id`` on both back ends, and deleting what
was learned from a question when another version of its exchange is shown."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import inspect

from db import migrate
from db.engine import Database
from db.repositories import memories as memories_repo
from db.repositories import messages as messages_repo
from db.repositories import sessions as sessions_repo
from db.repositories import users as users_repo
from db.repositories import versions as versions_repo
from db.repositories.versions import NewVersion


async def _memories_schema(database: Database) -> dict[str, Any]:
    def read(sync: Any) -> dict[str, Any]:
        inspector = inspect(sync)
        return {
            "columns": {c["name"] for c in inspector.get_columns("memories")},
            "indexes": {i["name"] for i in inspector.get_indexes("memories")},
            "foreign_keys": [
                (fk["constrained_columns"], fk["referred_table"], fk.get("options", {}))
                for fk in inspector.get_foreign_keys("memories")
            ],
        }

    async with database.engine.connect() as conn:
        return await conn.run_sync(read)


async def test_the_column_comes_and_goes_with_its_revision(empty_database_url: str) -> None:
    database = Database(empty_database_url)
    try:
        await migrate.upgrade(database)
        schema = await _memories_schema(database)
        assert "source_message_id" in schema["columns"]
        assert "ix_memories_source_message" in schema["indexes"]
        if database.engine.dialect.name == "postgresql":
            # SQLite cannot add a constraint by ALTER TABLE: a plain column there.
            assert (["source_message_id"], "messages", {"ondelete": "SET NULL"}) in schema[
                "foreign_keys"
            ]

        await migrate.downgrade(database, "0008_message_versions")
        assert "source_message_id" not in (await _memories_schema(database))["columns"]
        await migrate.upgrade(database)
        assert "source_message_id" in (await _memories_schema(database))["columns"]
    finally:
        await database.dispose()


async def test_showing_another_version_forgets_only_what_its_exchange_taught(
    database_url: str,
) -> None:
    database = Database(database_url)
    await migrate.upgrade(database)
    try:
        async with database.transaction() as db:
            user = await users_repo.create_user(
                db, email=f"{uuid.uuid4().hex}@example.com", name="Ada", password_hash=None
            )
            chat = await sessions_repo.create_session(
                db, owner_id=user.id, title="t", model=None, system_prompt=None
            )
            questions = []
            for text in ("I live in Oslo", "I have a dog"):
                asked = await messages_repo.append_message(
                    db, session_id=chat.id, role="user", user_id=user.id, content=text
                )
                answer = await messages_repo.append_answer(
                    db,
                    session_id=chat.id,
                    content="ok",
                    status="complete",
                    model="m",
                    reply_to=asked.message.id,
                )
                questions.append((asked.message.id, answer.message.id))
            (oslo_q, oslo_a), (dog_q, _) = questions
            for content, source, message_id in (
                ("lives in Oslo", "learned", oslo_q),
                ("has a dog", "learned", dog_q),
                ("likes tea", "user", None),
            ):
                await memories_repo.add(
                    db,
                    user.id,
                    kind="fact",
                    content=content,
                    source=source,
                    source_message_id=message_id,
                )

        # A new version of the answer to the Oslo question.
        async with database.transaction() as db:
            answer = await versions_repo.lock_message(db, chat.id, oslo_a)
            assert answer is not None
            await versions_repo.add_version(
                db, answer, NewVersion("sure", "m", "complete", reply_version=1), show=True
            )
            assert await versions_repo.shows(db, [(oslo_a, 2), (oslo_q, 1)])
            assert not await versions_repo.shows(db, [(oslo_a, 1)])

        async with database.read() as db:
            items = await memories_repo.list_for_user(db, user.id)
        assert [(i.content, i.source) for i in items] == [
            ("has a dog", "learned"),
            ("likes tea", "user"),
        ]
    finally:
        await database.dispose()
