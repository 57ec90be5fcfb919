"""Group commit (issue 19): a room's messages that queue on one node go as one
transaction, each keeping the outcome it would have had alone."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiosqlite
import asyncpg
import httpx
import pytest
from sqlalchemy import distinct, false, func, select

from db.models import Message
from db.repositories import message_batches
from server.config import Settings
from tests.conftest import LiveServer, TestUser, make_settings, register_user, shared_room
from tests.ws.conftest import Connect
from tests.wsclient import WSClient

SENDERS = 6
EACH = 12


@pytest.fixture
def settings(database_url: str) -> Settings:
    # The limiter is not what is tested: many messages from few users, at once.
    return make_settings(database_url, messages_per_window=100_000, frames_per_window=100_000)


async def _room_of(client: httpx.AsyncClient, people: int) -> tuple[list[TestUser], str]:
    return await shared_room(client, [f"U{n}" for n in range(people)], title="busy")


async def _joined(connect: Connect, user: TestUser, session_id: str) -> WSClient:
    ws = await connect(user)
    joined = await ws.request({"type": "join", "session_id": session_id})
    assert joined["type"] == "joined", joined
    return ws


def _message(session_id: str, content: str, **extra: Any) -> dict[str, Any]:
    return {"type": "message", "session_id": session_id, "content": content, "reply": "none"}


async def _units_of_work(live_server: LiveServer, session_id: str) -> int:
    """How many units of work stored the session's messages: one takes its time
    (``created_at``) once for all it stores, and one after another never share it."""
    async with live_server.container.database.read() as db:
        query = select(func.count(distinct(Message.created_at))).where(
            Message.session_id == uuid.UUID(session_id)
        )
        return int((await db.execute(query)).scalar_one())


def _reply_to(frame_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda frame: frame.get("id") == frame_id


async def test_concurrent_senders_are_acked_in_order_with_gapless_seq_in_fewer_commits(
    connect: Connect, live_client: httpx.AsyncClient, live_server: LiveServer
) -> None:
    users, session_id = await _room_of(live_client, SENDERS)
    sockets = [await _joined(connect, user, session_id) for user in users]

    async def send_all(n: int, ws: WSClient) -> list[dict[str, Any]]:
        # Every frame at once (one connection handles its frames in order): the
        # senders' messages meet in the room's queue.
        ids = [f"s{n}-{k}" for k in range(EACH)]
        for frame_id, k in zip(ids, range(EACH), strict=True):
            await ws.send({**_message(session_id, f"{n}:{k}"), "id": frame_id})
        return [await ws.next(where=_reply_to(i), timeout=20) for i in ids]

    acks = await asyncio.gather(*(send_all(n, ws) for n, ws in enumerate(sockets)))

    total = SENDERS * EACH
    seqs = []
    for n, sent in enumerate(acks):
        assert [a["type"] for a in sent] == ["ack"] * EACH, sent
        assert [a["message"]["content"] for a in sent] == [f"{n}:{k}" for k in range(EACH)]
        own = [a["message"]["seq"] for a in sent]
        assert own == sorted(own)  # each sender's messages in its send order
        seqs += own
    assert sorted(seqs) == list(range(1, total + 1))
    for ws in sockets:
        frames = [await ws.next("message", timeout=20) for _ in range(total)]
        assert [f["message"]["seq"] for f in frames] == list(range(1, total + 1))
    # Fewer units of work than messages: they were committed together.
    assert await _units_of_work(live_server, session_id) < total
    assert live_server.container.messages.commits.stats.largest > 1


async def test_a_lone_message_goes_at_once_without_waiting_for_company(
    connect: Connect, room: tuple[TestUser, TestUser, str], live_server: LiveServer
) -> None:
    ada, _, session_id = room
    ws = await _joined(connect, ada, session_id)
    stats = live_server.container.messages.commits.stats

    ack = await ws.request(_message(session_id, "alone"))

    # Nothing else was sent: the ack proves it did not wait for a second message.
    assert ack["message"]["seq"] == 1
    assert (stats.batches, stats.sizes) == (1, [1])


@contextlib.asynccontextmanager
async def _holding_the_room(
    database_url: str, session_id: str, *, then_close: bool = False
) -> AsyncIterator[None]:
    """Hold the room's write lock from outside the app (the session row on
    PostgreSQL, the database's write lock on SQLite), as a slow commit would: the
    room's first message stays in flight and what comes next queues behind it. With
    ``then_close``, the holder closes the session as it lets go."""
    close = "UPDATE chat_sessions SET status = 'closed' WHERE id = "
    if database_url.startswith("sqlite"):
        path = database_url.split(":///", 1)[1]
        async with aiosqlite.connect(path, isolation_level=None) as db:
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield
            finally:
                if then_close:
                    await db.execute(close + "?", (uuid.UUID(session_id).hex,))
                    await db.execute("COMMIT")
                else:
                    await db.execute("ROLLBACK")
        return
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute(
            "SELECT 1 FROM chat_sessions WHERE id = $1 FOR UPDATE", uuid.UUID(session_id)
        )
        try:
            yield
        finally:
            if then_close:
                await conn.execute(close + "$1", uuid.UUID(session_id))
                await transaction.commit()
            else:
                await transaction.rollback()
    finally:
        await conn.close()


async def _until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110  (polls the server's state)
            await asyncio.sleep(0.005)


async def test_duplicates_and_a_non_member_inside_one_batch_each_get_what_they_would_alone(
    connect: Connect,
    live_client: httpx.AsyncClient,
    live_server: LiveServer,
    database_url: str,
) -> None:
    users, session_id = await _room_of(live_client, 3)
    ada, bob, cy = users
    eve = await register_user(live_client, "Eve")  # not a member
    stored = await (await _joined(connect, bob, session_id)).request(
        {**_message(session_id, "earlier"), "client_msg_id": "old"}
    )
    watcher = await _joined(connect, cy, session_id)
    ada_1, ada_2 = await _joined(connect, ada, session_id), await _joined(connect, ada, session_id)
    bob_ws = await _joined(connect, bob, session_id)
    commits = live_server.container.messages.commits

    async def rest_post(user: TestUser, content: str) -> httpx.Response:
        return await live_client.post(
            f"/v1/sessions/{session_id}/messages",
            json={"content": content, "reply": "none"},
            headers=user.headers,
        )

    async with _holding_the_room(database_url, session_id):
        head = asyncio.ensure_future(watcher.request(_message(session_id, "head")))
        await _until(lambda: commits.stats.batches == 2)  # "head" is in flight
        # The next batch: a retry twice over (two sockets), a non-member in the middle,
        # a repeat of a stored message, and a plain message after them.
        first = asyncio.ensure_future(
            ada_1.request({**_message(session_id, "twice"), "client_msg_id": "k"}, timeout=20)
        )
        await _until(lambda: commits.queued(uuid.UUID(session_id)) == 1)
        second = asyncio.ensure_future(
            ada_2.request({**_message(session_id, "twice"), "client_msg_id": "k"}, timeout=20)
        )
        await _until(lambda: commits.queued(uuid.UUID(session_id)) == 2)
        refused = asyncio.ensure_future(rest_post(eve, "let me in"))
        await _until(lambda: commits.queued(uuid.UUID(session_id)) == 3)
        repeat = asyncio.ensure_future(
            bob_ws.request({**_message(session_id, "earlier"), "client_msg_id": "old"}, timeout=20)
        )
        await _until(lambda: commits.queued(uuid.UUID(session_id)) == 4)
        last = asyncio.ensure_future(rest_post(cy, "after them"))
        await _until(lambda: commits.queued(uuid.UUID(session_id)) == 5)

    assert (await head)["message"]["seq"] == 2
    one, two, repeated = await first, await second, await repeat
    assert one["type"] == two["type"] == "ack"
    assert one["message"] == two["message"]
    assert one["message"]["seq"] == 3
    assert repeated["message"] == stored["message"]
    eve_reply = await refused
    assert eve_reply.status_code == 404, eve_reply.text
    assert eve_reply.json()["error"]["code"] == "not_found"
    after = await last
    assert after.status_code == 201, after.text
    assert after.json()["data"]["message"]["seq"] == 4
    assert commits.stats.sizes[-1] == 5  # one batch held all five
    frames = [await watcher.next("message") for _ in range(3)]
    assert [f["message"]["content"] for f in frames] == ["head", "twice", "after them"]
    history = await live_client.get(f"/v1/sessions/{session_id}/messages", headers=ada.headers)
    assert [m["seq"] for m in history.json()["data"]["messages"]] == [1, 2, 3, 4]


async def test_a_batch_that_collides_with_another_writer_stores_one_by_one(
    connect: Connect,
    live_client: httpx.AsyncClient,
    live_server: LiveServer,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ``client_msg_id`` stored by another node after the batch looked for it: the
    batch's insert fails (IntegrityError), and each message is then stored alone, so
    that only that one replays the stored row and the others are stored."""
    users, session_id = await _room_of(live_client, 3)
    ada, bob, cy = users
    sockets = [await _joined(connect, user, session_id) for user in users]
    rival = await sockets[1].request({**_message(session_id, "mine"), "client_msg_id": "contested"})
    commits = live_server.container.messages.commits
    # The race, made certain: the batch's look for stored keys finds none.
    monkeypatch.setattr(message_batches, "_HELD", select(Message).where(false()))

    async with _holding_the_room(database_url, session_id):
        head = asyncio.ensure_future(sockets[2].request(_message(session_id, "head")))
        await _until(lambda: commits.stats.batches == 2)
        plain = asyncio.ensure_future(sockets[1].request(_message(session_id, "plain")))
        await _until(lambda: commits.queued(uuid.UUID(session_id)) == 1)
        contested = asyncio.ensure_future(
            sockets[0].request(
                {**_message(session_id, "mine"), "client_msg_id": "contested"}, timeout=20
            )
        )
        await _until(lambda: commits.queued(uuid.UUID(session_id)) == 2)

    heads, other, replayed = await head, await plain, await contested
    assert commits.stats.fallbacks == 1
    assert heads["message"]["seq"] == 2
    assert other["message"]["seq"] == 3  # stored alone after the batch failed
    assert replayed["message"] == rival["message"]  # the rival's row, as a retry gets it
    history = await live_client.get(f"/v1/sessions/{session_id}/messages", headers=cy.headers)
    assert [m["content"] for m in history.json()["data"]["messages"]] == ["mine", "head", "plain"]
    del ada, bob


async def test_questions_in_one_batch_are_each_answered_after_them_in_order(
    connect: Connect,
    live_client: httpx.AsyncClient,
    live_server: LiveServer,
    database_url: str,
) -> None:
    """``reply: auto`` inside a batch: each question is confirmed to its answer once
    stored, and the answers take the seqs after the questions."""
    users, session_id = await _room_of(live_client, 3)
    sockets = [await _joined(connect, user, session_id) for user in users]
    commits = live_server.container.messages.commits
    room = uuid.UUID(session_id)

    async with _holding_the_room(database_url, session_id):
        head = asyncio.ensure_future(sockets[2].request(_message(session_id, "head")))
        await _until(lambda: commits.stats.batches == 1)
        asked = []
        for n, ws in enumerate(sockets[:2]):
            question = {**_message(session_id, f"question {n}"), "reply": "auto"}
            asked.append(asyncio.ensure_future(ws.request(question, timeout=20)))
            await _until(lambda n=n: commits.queued(room) == n + 1)  # type: ignore[misc]

    assert (await head)["message"]["seq"] == 1
    acks = [await a for a in asked]
    assert commits.stats.sizes[-1] == 2
    assert [a["message"]["seq"] for a in acks] == [2, 3]
    ends = {}
    for ack in acks:
        assert ack["stream_id"]
        end = await sockets[2].next("stream.end", where=_stream(ack["stream_id"]), timeout=30)
        ends[ack["message"]["id"]] = end["message"]
    for ack in acks:
        answer = ends[ack["message"]["id"]]
        assert answer["reply_to"] == ack["message"]["id"]
        assert answer["status"] == "complete"
    assert sorted(a["seq"] for a in ends.values()) == [4, 5]


def _stream(stream_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda frame: frame.get("stream_id") == stream_id


async def test_a_batch_into_a_closed_session_refuses_each_as_alone(
    live_client: httpx.AsyncClient, live_server: LiveServer, database_url: str
) -> None:
    users, session_id = await _room_of(live_client, 3)
    eve = await register_user(live_client, "Eve")  # not a member
    commits = live_server.container.messages.commits
    room = uuid.UUID(session_id)

    async def rest_post(user: TestUser, content: str) -> httpx.Response:
        return await live_client.post(
            f"/v1/sessions/{session_id}/messages",
            json={"content": content, "reply": "none"},
            headers=user.headers,
        )

    # The session is closed while its messages queue.
    async with _holding_the_room(database_url, session_id, then_close=True):
        head = asyncio.ensure_future(rest_post(users[2], "head"))
        await _until(lambda: commits.stats.batches == 1)
        posts = []
        for n, user in enumerate([users[0], eve, users[1]]):
            posts.append(asyncio.ensure_future(rest_post(user, f"in batch {n}")))
            await _until(lambda n=n: commits.queued(room) == n + 1)  # type: ignore[misc]

    replies = [await head] + [await p for p in posts]
    assert commits.stats.sizes[-1] == 3
    codes = [(r.status_code, r.json()["error"]["code"]) for r in replies]
    assert codes == [(409, "conflict"), (409, "conflict"), (404, "not_found"), (409, "conflict")]
