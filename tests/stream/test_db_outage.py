"""The database goes away while an answer streams: the answer still ends for every
member (``stream.end`` with ``unavailable`` and no message), and is stored, and sent
to the room as a ``message``, once the database is back."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import LiveServer, create_session, make_settings, register_user
from tests.faults.postgres import BOUND_S, FAULT_TIMEOUTS, pg_proxy, serving, through
from tests.faults.tcp_proxy import TcpProxy
from tests.stream.conftest import collect_stream
from tests.wsclient import WSClient

__all__ = ["pg_proxy"]


@pytest.fixture
async def server(postgres_database: str, pg_proxy: TcpProxy) -> AsyncIterator[LiveServer]:
    settings = make_settings(
        through(pg_proxy, postgres_database),
        **FAULT_TIMEOUTS,
        offline_token_delay_s=0.05,  # the answer streams for a second or two
        db_store_retry_max_s=0.5,
    )
    async with serving(settings, pg_proxy) as live:
        yield live


async def test_an_answer_whose_store_fails_ends_with_an_error_and_is_stored_later(
    server: LiveServer, pg_proxy: TcpProxy
) -> None:
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        ada = await register_user(http, "Ada")
        bob = await register_user(http, "Bob")
        session_id = await create_session(http, ada)
        added = await http.post(
            f"/v1/sessions/{session_id}/members", json={"user_id": bob.id}, headers=ada.headers
        )
        assert added.status_code == 201
    ada_ws, _ = await WSClient.connect(server.ws_url, ada.access_token)
    bob_ws, _ = await WSClient.connect(server.ws_url, bob.access_token)
    try:
        for client in (ada_ws, bob_ws):
            await client.request({"type": "join", "session_id": session_id})
        ack = await ada_ws.request(
            {"type": "message", "session_id": session_id, "content": "tell me a story"}
        )
        stream_id = ack["stream_id"]
        first = await bob_ws.next("stream.delta", lambda f: f["stream_id"] == stream_id)
        await pg_proxy.refuse()  # pooled connections cut, new ones refused

        ends = []
        for client, before in ((ada_ws, ""), (bob_ws, first["text"])):
            streamed = await collect_stream(client, stream_id, timeout=BOUND_S)
            assert streamed.end is not None
            ends.append((before + streamed.text, streamed.end))
        text = ends[0][0]
        assert text and all(seen == text for seen, _ in ends)
        for _, end in ends:
            assert end["finish_reason"] == "error"
            assert end["error"]["code"] == "unavailable"
            assert end["message"] is None

        await pg_proxy.restore()
        for client in (ada_ws, bob_ws):
            late = await client.next(
                "message", lambda f: f["message"]["role"] == "assistant", timeout=BOUND_S
            )
            assert late["message"]["content"] == text
            assert late["message"]["seq"] == 2

        async with httpx.AsyncClient(base_url=server.http_url) as http:
            history = await http.get(f"/v1/sessions/{session_id}/messages", headers=ada.headers)
        stored = history.json()["data"]["messages"]
        assert [(m["role"], m["seq"]) for m in stored] == [("user", 1), ("assistant", 2)]
        assert stored[1]["content"] == text
        carol, _ = await WSClient.connect(server.ws_url, ada.access_token)
        try:
            joined = await carol.request({"type": "join", "session_id": session_id})
            assert joined["streams"] == []  # the stream is not listed as running
            assert joined["last_seq"] == 2
        finally:
            await carol.close()
    finally:
        await ada_ws.close()
        await bob_ws.close()
