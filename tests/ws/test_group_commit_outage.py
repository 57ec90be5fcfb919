"""Group commit (issue 19) when PostgreSQL's connection is cut while a batch of a
room's messages is on its way: no sender of the batch is acked, and the room's seq
goes on without a gap. Cut before its write, nothing of it is stored; cut while its
one write statement runs, it may be (as a lone message's statement may be): then every
member still gets it, in order, from the database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from tests.conftest import LiveServer, make_settings, shared_room
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


async def _until_committed(database_url: str, session_id: str, last_seq: int) -> None:
    """Until the session's ``last_seq`` (committed) reaches ``last_seq``."""
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
    query = "SELECT last_seq FROM chat_sessions WHERE id = $1"
    try:
        async with asyncio.timeout(BOUND_S):
            while await conn.fetchval(query, uuid.UUID(session_id)) < last_seq:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    finally:
        await conn.close()


@pytest.mark.parametrize("cut_in", ["reads", "write"])
async def test_a_batch_cut_on_its_way_acks_nobody_and_leaves_no_gap(
    server: LiveServer, pg_proxy: TcpProxy, postgres_database: str, cut_in: str
) -> None:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        users, session_id = await shared_room(http, ["Ada", "Bob", "Cy"])
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
            # The head commits; the batch goes, slowed, and is cut.
            assert (await head)["message"]["seq"] == 1
            await _until(lambda: commits.stats.batches == 2)
            if cut_in == "write":
                # Its one statement has run (and committed); the reply is on its way.
                await _until_committed(postgres_database, session_id, 3)
            pg_proxy.cut()
            replies = [await reply for reply in batch]
            assert [(r["type"], r["code"]) for r in replies] == [("error", "unavailable")] * 2
            pg_proxy.latency_s = 0.0

            after = await sockets[0].request(_message(session_id, "after"), timeout=BOUND_S)
            history = await http.get(
                f"/v1/sessions/{session_id}/messages", headers=users[0].headers
            )
            stored = [(m["seq"], m["content"]) for m in history.json()["data"]["messages"]]
            if cut_in == "reads":
                assert stored == [(1, "head"), (2, "after")]  # no seq taken by the batch
            else:  # stored though its senders heard "unavailable" (they may retry)
                assert stored == [(1, "head"), (2, "batch 0"), (3, "batch 1"), (4, "after")]
            assert after["message"]["seq"] == len(stored)
            frames = [await sockets[1].next("message", timeout=BOUND_S) for _ in stored]
            assert [(f["message"]["seq"], f["message"]["content"]) for f in frames] == stored
            assert sockets[1].unread("message") == []
        finally:
            pg_proxy.latency_s = 0.0
            for ws in sockets:
                await ws.close()
