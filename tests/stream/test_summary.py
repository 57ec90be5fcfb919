from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from db.repositories import messages as messages_repo
from db.repositories import usage as usage_repo
from server.app import create_app
from tests.conftest import LiveServer, create_session, make_settings, register_user
from tests.stream.conftest import collect_stream
from tests.wsclient import WSClient

WINDOW, RESERVE = 1024, 128


@pytest.fixture
async def small_window_server(database_url: str) -> AsyncIterator[LiveServer]:
    settings = make_settings(
        database_url,
        llm_context_length=WINDOW,
        llm_reply_reserve_tokens=RESERVE,
        messages_per_window=1000,
    )
    server = LiveServer(create_app(settings))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.mark.slow
async def test_a_conversation_ten_windows_long_stays_inside_the_window_and_keeps_early_facts(
    small_window_server: LiveServer,
) -> None:
    async with httpx.AsyncClient(base_url=small_window_server.http_url) as http:
        ada = await register_user(http, "Ada")
        session_id = await create_session(http, ada, title="long")
    client, _ = await WSClient.connect(small_window_server.ws_url, ada.access_token)
    filler = " ".join(["the weather report mentioned rain and wind again"] * 8)
    try:
        await client.request({"type": "join", "session_id": session_id})
        first = "Remember this: my cat is called Zanzibar and she is seven years old."
        for turn in range(26):
            content = first if turn == 0 else f"Turn {turn}: {filler}"
            ack = await client.request(
                {"type": "message", "session_id": session_id, "content": content}, timeout=20
            )
            streamed = await collect_stream(client, ack["stream_id"], timeout=20)
            assert streamed.end is not None and streamed.end["finish_reason"] in ("stop", "length")
    finally:
        await client.close()

    database = small_window_server.container.database
    async with database.transaction() as session:
        summary = await messages_repo.latest_summary(session, uuid.UUID(session_id))
        events = await usage_repo.usage_for_session(session, uuid.UUID(session_id))
    assert summary is not None and "Zanzibar" in summary.content
    assert summary.covers_seq > 10
    assert len(events) == 26
    assert max(e.prompt_tokens for e in events) <= WINDOW - RESERVE
    total_sent = sum(e.prompt_tokens for e in events)
    assert total_sent > 10 * WINDOW * 0.5  # the conversation really outgrew the window
