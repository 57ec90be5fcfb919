"""Without an OPENROUTER_API_KEY: the offline model says what it is and learns nothing."""

from __future__ import annotations

import asyncio

import httpx

from llm.offline import OFFLINE_MODEL
from tests.conftest import Connect, LiveServer, create_session, register_user
from tests.stream.conftest import collect_stream


async def test_the_offline_model_names_itself_and_learns_nothing_about_the_user(
    live_server: LiveServer, live_client: httpx.AsyncClient, connect: Connect
) -> None:
    assert live_server.app.state.settings.offline_model
    ada = await register_user(live_client, "Ada")
    session_id = await create_session(live_client, ada, title="offline")
    ws = await connect(ada)
    await ws.request({"type": "join", "session_id": session_id})

    ack = await ws.request(
        {
            "type": "message",
            "session_id": session_id,
            "content": "My name is Ada and I prefer short answers.",
        }
    )
    streamed = await collect_stream(ws, ack["stream_id"])
    assistant = live_server.container.assistant
    await asyncio.gather(*list(assistant._background), return_exceptions=True)

    assert streamed.start["model"] == OFFLINE_MODEL
    assert streamed.end is not None and streamed.end["model"] == OFFLINE_MODEL
    page = await live_client.get(f"/v1/sessions/{session_id}/messages", headers=ada.headers)
    answer = next(m for m in page.json()["data"]["messages"] if m["role"] == "assistant")
    assert answer["model"] == OFFLINE_MODEL
    memory = await live_client.get("/v1/me/memory", headers=ada.headers)
    assert memory.json()["data"]["items"] == []
