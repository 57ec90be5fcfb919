from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, TestUser, create_session, register_user
from tests.wsclient import WSClient

Connect = Callable[..., Awaitable[WSClient]]


@pytest.fixture
async def connect(live_server: LiveServer) -> AsyncIterator[Connect]:
    """Open WebSocket clients against the live server; all closed at the end."""
    opened: list[WSClient] = []

    async def open_client(user: TestUser, **kwargs: Any) -> WSClient:
        client, _ = await WSClient.connect(live_server.ws_url, user.access_token, **kwargs)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        await client.close()


@pytest.fixture
async def room(live_client: httpx.AsyncClient) -> tuple[TestUser, TestUser, str]:
    """Two users, the first owning a session the second was added to."""
    ada = await register_user(live_client, "Ada")
    bob = await register_user(live_client, "Bob")
    session_id = await create_session(live_client, ada, title="pair")
    response = await live_client.post(
        f"/v1/sessions/{session_id}/members", json={"user_id": bob.id}, headers=ada.headers
    )
    assert response.status_code == 201, response.text
    return ada, bob, session_id
