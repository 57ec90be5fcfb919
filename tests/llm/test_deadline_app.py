"""The first-token deadline as a user meets it: a real server, a WebSocket client, a
hung fake OpenRouter behind retries and a fallback model."""

from __future__ import annotations

import httpx

from server.app import create_app
from tests.conftest import LiveServer, create_session, make_settings, register_user
from tests.fakes.openrouter import FakeOpenRouter, Silent
from tests.stream.conftest import collect_stream
from tests.wsclient import WSClient


async def test_a_hung_upstream_reaches_the_user_at_the_deadline_not_after_every_attempt(
    database_url: str, fake_openrouter: FakeOpenRouter
) -> None:
    # Per attempt the defaults stand (60 s to the first token, two retries) and there is
    # a fallback model: without one deadline over them all, this answer took 6 minutes.
    settings = make_settings(
        database_url,
        openrouter_api_key="sk-or-test",
        openrouter_base_url=fake_openrouter.base_url,
        llm_fallback_models=["anthropic/claude-3.5-sonnet"],
        llm_first_token_deadline_s=1.0,
    )
    fake_openrouter.default = Silent()
    server = LiveServer(create_app(settings))
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            ada = await register_user(http, "Ada")
            session_id = await create_session(http, ada)
        client, _ = await WSClient.connect(server.ws_url, ada.access_token)
        try:
            await client.request({"type": "join", "session_id": session_id})
            ack = await client.request(
                {"type": "message", "session_id": session_id, "content": "anyone there?"}
            )
            streamed = await collect_stream(client, ack["stream_id"], timeout=20)
        finally:
            await client.close()
    finally:
        await server.stop()

    assert streamed.end is not None
    assert streamed.end["finish_reason"] == "error"
    assert streamed.end["error"]["code"] == "unavailable"
    assert "did not start answering within 1 s" in streamed.end["error"]["message"]
    assert fake_openrouter.chat_models == ["openai/gpt-4o-mini"]
