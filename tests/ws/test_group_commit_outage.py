"""Group commit (issue 19) when PostgreSQL's connection is cut while a batch of a
room's messages is in its transaction: no sender of the batch is acked, nothing of it
is stored, and the room's seq goes on without a gap."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from tests.conftest import LiveServer, create_session, make_settings, register_user
from tests.faults.postgres import BOUND_S, FAULT_TIMEOUTS, pg_proxy, serving, through
from tests.faults.tcp_proxy import TcpProxy
from tests.ws.test_group_commit import _holding_the_room, _message, _until
from tests.wsclient import WSClient

__all__ = ["pg_proxy"]

pytestmark = pytest.mark.postgres
LATENCY_S = 0.2  # each trip through the proxy: the batch's transaction takes several


@pytest.fixture
async def server(postgres_database: str, pg_proxy: TcpProxy) -> AsyncIterator[LiveServer]:
    settings = {**FAULT_TIMEOUTS, "db_statement_timeout_s": 3.0, "db_connect_timeout_s": 3.0}
    url = through(pg_proxy, postgres_database)
    async with serving(make_settings(url, **settings), pg_proxy) as live:
        yield live


async def _until_the_batch_bumped_seq(database_url: str, session_id: str) -> None:
    """Until the session row is locked by a writer (the batch's seq bump is done and
    its transaction still open): a lock taken without waiting fails."""
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        async with asyncio.timeout(BOUND_S):
            while True:
                try:
                    async with conn.transaction():
                        await conn.execute(
                            "SELECT 1 FROM chat_sessions WHERE id = $1 FOR UPDATE NOWAIT",
                            uuid.UUID(session_id),
                        )
                except asyncpg.LockNotAvailableError:
                    return
                await asyncio.sleep(0.01)
    finally:
        await conn.close()


async def test_a_batch_cut_in_its_transaction_acks_nobody_and_leaves_no_gap(
    server: LiveServer, pg_proxy: TcpProxy, postgres_database: str
) -> None:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        users = [await register_user(http, name) for name in ("Ada", "Bob", "Cy")]
        session_id = await create_session(http, users[0])
        for user in users[1:]:
            added = await http.post(
                f"/v1/sessions/{session_id}/members",
                json={"user_id": user.id},
                headers=users[0].headers,
            )
            assert added.status_code == 201, added.text
        sockets = []
        for user in users:
            ws, _ = await WSClient.connect(server.ws_url, user.access_token)
            await ws.request({"type": "join", "session_id": session_id})
            sockets.append(ws)
        commits = server.container.messages.commits
        room = uuid.UUID(session_id)
        try:
            async with _holding_the_room(postgres_database, session_id):
                head = asyncio.ensure_future(sockets[2].request(_message(session_id, "head")))
                await _until(lambda: commits.stats.batches == 1)
                batch = []
                for n, ws in enumerate(sockets[:2]):
                    reply = ws.request(_message(session_id, f"batch {n}"), timeout=BOUND_S)
                    batch.append(asyncio.ensure_future(reply))
                    await _until(lambda n=n: commits.queued(room) == n + 1)  # type: ignore[misc]
                pg_proxy.latency_s = LATENCY_S
            # The head commits; the batch begins its transaction, slowed, and is cut.
            assert (await head)["message"]["seq"] == 1
            await _until(lambda: commits.stats.batches == 2)
            await _until_the_batch_bumped_seq(postgres_database, session_id)
            pg_proxy.cut()  # after the bump, before the commit
            replies = [await reply for reply in batch]
            assert [(r["type"], r["code"]) for r in replies] == [("error", "unavailable")] * 2
            pg_proxy.latency_s = 0.0

            after = await sockets[0].request(_message(session_id, "after"), timeout=BOUND_S)
            assert after["message"]["seq"] == 2  # no seq was taken by the batch
            history = await http.get(
                f"/v1/sessions/{session_id}/messages", headers=users[0].headers
            )
            stored = history.json()["data"]["messages"]
            assert [(m["seq"], m["content"]) for m in stored] == [(1, "head"), (2, "after")]
            frames = [await sockets[1].next("message") for _ in range(2)]
            assert [f["message"]["seq"] for f in frames] == [1, 2]
            assert sockets[1].unread("message") == []
        finally:
            pg_proxy.latency_s = 0.0
            for ws in sockets:
                await ws.close()
