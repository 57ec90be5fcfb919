"""The database out of reach, seen on a WebSocket: a frame that needs it answers
``unavailable`` with ``retry_after`` in bounded time, and holds no other frame (``ping``)
on its connection meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from server.app import create_app
from tests.conftest import LiveServer, create_session, make_settings, register_user
from tests.faults.postgres import BOUND_S, FAULT_TIMEOUTS, pg_proxy, serving, through
from tests.faults.tcp_proxy import TcpProxy
from tests.wsclient import WSClient

__all__ = ["pg_proxy"]


@pytest.fixture
async def server(postgres_database: str, pg_proxy: TcpProxy) -> AsyncIterator[LiveServer]:
    # Statements may wait 3 s: the window in which the ping must be answered.
    timeouts = FAULT_TIMEOUTS | {"db_statement_timeout_s": 3.0, "db_connect_timeout_s": 3.0}
    settings = make_settings(through(pg_proxy, postgres_database), **timeouts)
    async with serving(settings, pg_proxy) as live:
        yield live


@contextlib.asynccontextmanager
async def ada_in_a_session(server: LiveServer) -> AsyncIterator[tuple[WSClient, str]]:
    """Ada registered, owning a new session, connected (not yet joined)."""
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        ada = await register_user(http, "Ada")
        session_id = await create_session(http, ada)
    client, _ = await WSClient.connect(server.ws_url, ada.access_token)
    try:
        yield client, session_id
    finally:
        await client.close()


async def test_ping_is_answered_while_a_message_waits_on_a_partitioned_database(
    server: LiveServer, pg_proxy: TcpProxy
) -> None:
    async with ada_in_a_session(server) as (client, session_id):
        await client.request({"type": "join", "session_id": session_id})
        pg_proxy.blackhole()

        await client.send(
            {"type": "message", "id": "m1", "session_id": session_id, "content": "hello?"}
        )
        pong = await client.request({"type": "ping"}, timeout=BOUND_S)

        assert pong["type"] == "pong"
        assert [f for f in client.seen if f.get("id") == "m1"] == []  # still waiting
        error = await client.next("error", lambda f: f.get("id") == "m1", timeout=BOUND_S)
        assert error["code"] == "unavailable"
        assert error["retry_after"] > 0

        await pg_proxy.restore()
        ack = await client.request(
            {"type": "message", "session_id": session_id, "content": "back", "reply": "none"},
            timeout=BOUND_S,
        )
        assert ack["type"] == "ack"


async def test_a_frame_refused_by_the_database_is_unavailable_not_internal(
    server: LiveServer, pg_proxy: TcpProxy
) -> None:
    async with ada_in_a_session(server) as (client, session_id):
        # Joined first: a message needs its room joined on the connection.
        assert (await client.request({"type": "join", "session_id": session_id}))["type"] == (
            "joined"
        )
        await pg_proxy.refuse()

        for frame in (
            {"type": "join", "session_id": session_id},
            {"type": "message", "session_id": session_id, "content": "hi", "reply": "none"},
        ):
            reply = await client.request(frame, timeout=BOUND_S)
            assert reply["type"] == "error", reply
            assert reply["code"] == "unavailable"
            assert reply["retry_after"] > 0


async def test_a_join_on_a_slow_database_answers_in_bounded_time(
    server: LiveServer, pg_proxy: TcpProxy
) -> None:
    async with ada_in_a_session(server) as (client, session_id):
        try:
            # Every round trip takes 4 s, over the 3 s statement timeout: a join of several
            # statements took their sum (35 s at 5 s latency) before the timeout.
            pg_proxy.latency_s = 2.0
            loop = asyncio.get_running_loop()
            started = loop.time()
            reply = await client.request(
                {"type": "join", "session_id": session_id}, timeout=BOUND_S
            )
            took = loop.time() - started

            assert reply["type"] == "error", reply
            assert reply["code"] == "unavailable"
            pong = await client.request({"type": "ping"}, timeout=BOUND_S)
            assert pong["type"] == "pong"
        finally:
            pg_proxy.latency_s = 0.0
    print(f"join answered in {took:.1f} s")


@pytest.fixture
async def sqlite_server(tmp_path: Path) -> AsyncIterator[tuple[LiveServer, Path]]:
    path = tmp_path / "parley.db"
    settings = make_settings(f"sqlite+aiosqlite:///{path}", db_statement_timeout_s=2.0)
    live = LiveServer(create_app(settings))
    await live.start()
    try:
        yield live, path
    finally:
        await live.stop()


async def test_on_sqlite_a_message_behind_another_process_s_lock_is_unavailable_and_holds_no_ping(
    sqlite_server: tuple[LiveServer, Path],
) -> None:
    server, path = sqlite_server
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        ada = await register_user(http, "Ada")
        session_id = await create_session(http, ada)
    client, _ = await WSClient.connect(server.ws_url, ada.access_token)
    other_process = sqlite3.connect(path, isolation_level=None)
    try:
        await client.request({"type": "join", "session_id": session_id})
        other_process.execute("BEGIN IMMEDIATE")  # the write lock, held

        await client.send(
            {
                "type": "message",
                "id": "m1",
                "session_id": session_id,
                "content": "hello?",
                "reply": "none",
            }
        )
        pong = await client.request({"type": "ping"}, timeout=BOUND_S)
        assert pong["type"] == "pong"
        assert [f for f in client.seen if f.get("id") == "m1"] == []  # still waiting
        # Past the busy timeout (the statement timeout): unavailable, not internal.
        error = await client.next("error", lambda f: f.get("id") == "m1", timeout=BOUND_S)
        assert error["code"] == "unavailable"
        assert error["retry_after"] > 0

        other_process.execute("ROLLBACK")
        ack = await client.request(
            {"type": "message", "session_id": session_id, "content": "now", "reply": "none"}
        )
        assert ack["type"] == "ack"
    finally:
        other_process.close()
        await client.close()
