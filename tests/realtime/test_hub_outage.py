"""The whole app on a Redis of the test's own, which the tests kill and restart.

What members see while the bus is down: a join refused cleanly (and one that works
once Redis is back), a ``bus`` notice when delivery degrades and when it is restored,
and no traceback in the logs for an outage the server expects.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from server.app import create_app
from tests.conftest import LiveServer, TestUser, create_session, make_settings, register_user
from tests.private_redis import PrivateRedis
from tests.wsclient import WSClient

pytestmark = [pytest.mark.redis, pytest.mark.slow]


@pytest.fixture
async def server(database_url: str, private_redis: PrivateRedis) -> AsyncIterator[LiveServer]:
    live = LiveServer(create_app(make_settings(database_url, redis_url=private_redis.url)))
    await live.start()
    try:
        yield live
    finally:
        await live.stop()


@pytest.fixture
async def sockets() -> AsyncIterator[list[WSClient]]:
    opened: list[WSClient] = []
    yield opened
    for client in opened:
        await client.close()


async def pair(server: LiveServer) -> tuple[TestUser, TestUser, str]:
    """Ada's session with Bob in it (made while Redis is up: the rate limiter needs it)."""
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        ada = await register_user(http, "Ada")
        bob = await register_user(http, "Bob")
        session_id = await create_session(http, ada, title="outage")
        added = await http.post(
            f"/v1/sessions/{session_id}/members", json={"user_id": bob.id}, headers=ada.headers
        )
        assert added.status_code == 201, added.text
    return ada, bob, session_id


async def until(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    """Wait for a state of the server that no frame announces."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110  (polls the server's state)
            await asyncio.sleep(0.02)


def bus_of(server: LiveServer) -> Any:
    return server.container.hub.bus


async def test_a_join_refused_during_an_outage_leaves_nothing_half_done(
    server: LiveServer, private_redis: PrivateRedis, sockets: list[WSClient]
) -> None:
    ada, bob, session_id = await pair(server)
    ada_ws, _ = await WSClient.connect(server.ws_url, ada.access_token)
    bob_ws, _ = await WSClient.connect(server.ws_url, bob.access_token)
    sockets += [ada_ws, bob_ws]
    hub = server.container.hub

    private_redis.stop()
    await until(lambda: not bus_of(server).healthy)
    refused = await ada_ws.request({"type": "join", "session_id": session_id}, timeout=15)
    assert refused["type"] == "error" and refused["code"] == "unavailable", refused
    assert session_id not in hub.rooms  # nobody half-joined, nothing queued for anyone

    await private_redis.start()
    await until(lambda: bus_of(server).healthy)
    joined = await ada_ws.request({"type": "join", "session_id": session_id}, timeout=15)
    assert joined["type"] == "joined", joined
    await bob_ws.request({"type": "join", "session_id": session_id})
    await bob_ws.request(
        {"type": "message", "session_id": session_id, "content": "hello", "reply": "none"}
    )
    assert (await ada_ws.next("message"))["message"]["content"] == "hello"


async def test_members_are_told_when_the_bus_degrades_and_when_it_is_restored(
    server: LiveServer,
    private_redis: PrivateRedis,
    sockets: list[WSClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    ada, bob, session_id = await pair(server)
    ada_ws, _ = await WSClient.connect(server.ws_url, ada.access_token)
    sockets.append(ada_ws)
    await ada_ws.request({"type": "join", "session_id": session_id})
    assert ada_ws.unread("bus") == []

    caplog.set_level(logging.INFO)
    private_redis.stop()
    assert await ada_ws.next("bus", timeout=15) == {"type": "bus", "status": "degraded"}

    # A connection made during the outage hears it right after its welcome.
    late = []
    for _ in range(3):
        bob_ws, _ = await WSClient.connect(server.ws_url, bob.access_token)
        sockets.append(bob_ws)
        late.append(bob_ws)
        assert await bob_ws.next("bus") == {"type": "bus", "status": "degraded"}
        assert bob_ws.seen[0]["type"] == "welcome"
    refused = await late[-1].request({"type": "join", "session_id": session_id}, timeout=15)
    assert refused["code"] == "unavailable"
    sent = await ada_ws.request(
        {"type": "message", "session_id": session_id, "content": "still here", "reply": "none"},
        timeout=15,
    )
    assert sent["type"] == "ack"
    assert (await ada_ws.next("message"))["message"]["content"] == "still here"

    await private_redis.start()
    assert await ada_ws.next("bus", timeout=15) == {"type": "bus", "status": "restored"}
    for bob_ws in late:
        assert await bob_ws.next("bus", timeout=15) == {"type": "bus", "status": "restored"}

    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert errors == [], [f"{r.name}: {r.getMessage()}" for r in errors]


async def test_a_paused_redis_degrades_publishing_until_it_answers_again(
    server: LiveServer, private_redis: PrivateRedis, sockets: list[WSClient]
) -> None:
    # The subscription stands through a pause (it has no read timeout), so nothing but
    # the publishes says that the bus is degraded, and nothing but a publish that goes
    # through again can say that it is restored.
    ada, _, session_id = await pair(server)
    ada_ws, _ = await WSClient.connect(server.ws_url, ada.access_token)
    sockets.append(ada_ws)
    await ada_ws.request({"type": "join", "session_id": session_id})

    private_redis.pause()
    try:
        sent = await ada_ws.request(
            {"type": "message", "session_id": session_id, "content": "paused", "reply": "none"},
            timeout=15,
        )
        assert sent["type"] == "ack"
        assert await ada_ws.next("bus", timeout=15) == {"type": "bus", "status": "degraded"}
    finally:
        private_redis.resume()

    assert await ada_ws.next("bus", timeout=15) == {"type": "bus", "status": "restored"}
    assert (await ada_ws.next("message"))["message"]["content"] == "paused"
    assert bus_of(server).reconnects == 0
