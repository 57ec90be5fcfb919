"""Many nodes writing into one session at once on PostgreSQL: seq stays gap-free."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import func, select

from db import migrate
from db.engine import Database
from db.models import Message
from db.repositories import messages as messages_repo
from db.repositories import sessions as sessions_repo
from db.repositories import users as users_repo
from server.services.accounts import Principal
from server.services.messages import MessageService

NODES = 20
APPENDS_PER_NODE = 10

pytestmark = pytest.mark.postgres


async def _room(url: str) -> tuple[uuid.UUID, uuid.UUID]:
    """A migrated database holding one user and one session; their ids."""
    database = Database(url)
    try:
        await migrate.upgrade(database)
        async with database.transaction() as db:
            user = await users_repo.create_user(
                db, email="writer@example.com", name="Writer", password_hash=None
            )
            chat = await sessions_repo.create_session(
                db, owner_id=user.id, title="busy", model=None, system_prompt=None
            )
        return user.id, chat.id
    finally:
        await database.dispose()


async def test_concurrent_appends_from_many_engines_get_seqs_without_gaps_or_duplicates(
    postgres_url: str,
) -> None:
    user_id, session_id = await _room(postgres_url)
    nodes = [Database(postgres_url, pool_size=1) for _ in range(NODES)]
    start = asyncio.Event()

    principal = Principal(user_id=user_id, name="Writer", role="user", expires_at=None)

    async def node(database: Database, number: int) -> list[int]:
        # Both ways in: a member's message (MessageService) and the assistant's answer.
        service = MessageService(database, max_content_chars=1000)
        await start.wait()
        seqs = []
        for n in range(APPENDS_PER_NODE):
            if n % 2 == 0:
                posted = await service.post(
                    principal, session_id, content=f"node {number} post {n}", reply="none"
                )
                seqs.append(posted.message["seq"])
                continue
            async with database.transaction() as db:
                appended = await messages_repo.append_message(
                    db,
                    session_id=session_id,
                    role="user",
                    user_id=user_id,
                    content=f"node {number} message {n}",
                )
                seqs.append(appended.message.seq)
        return seqs

    try:
        tasks = [asyncio.create_task(node(db, i)) for i, db in enumerate(nodes)]
        start.set()
        results = await asyncio.gather(*tasks)
        async with nodes[0].transaction() as db:
            stored = list(
                (
                    await db.execute(select(Message.seq).where(Message.session_id == session_id))
                ).scalars()
            )
            chat = await sessions_repo.get_session(db, session_id)
    finally:
        await asyncio.gather(*(db.dispose() for db in nodes))

    total = NODES * APPENDS_PER_NODE
    returned = sorted(seq for seqs in results for seq in seqs)
    assert returned == list(range(1, total + 1))
    assert sorted(stored) == list(range(1, total + 1))
    assert chat is not None and chat.last_seq == total
    # Each node's own appends were numbered in the order it made them.
    assert all(seqs == sorted(seqs) for seqs in results)


async def test_one_client_msg_id_raced_from_two_nodes_is_stored_once(postgres_url: str) -> None:
    user_id, session_id = await _room(postgres_url)
    nodes = [Database(postgres_url, pool_size=1) for _ in range(2)]
    services = [MessageService(db, max_content_chars=1000) for db in nodes]
    principal = Principal(user_id=user_id, name="Writer", role="user", expires_at=None)
    start = asyncio.Event()

    async def post(service: MessageService) -> tuple[str, bool]:
        await start.wait()
        posted = await service.post(
            principal, session_id, content="only once", client_msg_id="retry-1", reply="none"
        )
        return posted.message["id"], posted.created

    try:
        tasks = [asyncio.create_task(post(s)) for s in services]
        start.set()
        results = await asyncio.gather(*tasks)
        async with nodes[0].transaction() as db:
            count = (
                await db.execute(
                    select(func.count())
                    .select_from(Message)
                    .where(Message.session_id == session_id)
                )
            ).scalar_one()
            chat = await sessions_repo.get_session(db, session_id)
    finally:
        await asyncio.gather(*(db.dispose() for db in nodes))

    assert results[0][0] == results[1][0]
    assert sorted(created for _, created in results) == [False, True]
    assert count == 1
    assert chat is not None and chat.last_seq == 1
