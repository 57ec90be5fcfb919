"""Protection: message and typing rate limits, closing for repeated abuse (4429), the
heartbeat (4408) and dropping a client too slow to read its frames."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from server.app import create_app
from tests.conftest import LiveServer, TestUser, create_session, make_settings, register_user
from tests.ws.rawws import RawWebSocket, close_code
from tests.wsclient import WSClient


@contextlib.asynccontextmanager
async def serve(database_url: str, **overrides: Any) -> AsyncIterator[LiveServer]:
    server = LiveServer(create_app(make_settings(database_url, **overrides)))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def pair(server: LiveServer) -> tuple[TestUser, TestUser, str]:
    """Ada owns a session Bob is a member of."""
    async with httpx.AsyncClient(base_url=server.http_url) as http:
        ada = await register_user(http, "Ada")
        bob = await register_user(http, "Bob")
        session_id = await create_session(http, ada, title="limits")
        response = await http.post(
            f"/v1/sessions/{session_id}/members", json={"user_id": bob.id}, headers=ada.headers
        )
        assert response.status_code == 201, response.text
    return ada, bob, session_id


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """For state with no event to await (a server-side table emptying)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.02)


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


# Rate limits ----------------------------------------------------------------------------


async def test_the_message_over_the_limit_is_rate_limited_with_retry_after_and_not_stored(
    database_url: str,
) -> None:
    async with serve(database_url, messages_per_window=3, message_window_s=30) as server:
        ada, _, session_id = await pair(server)
        client, _ = await WSClient.connect(server.ws_url, ada.access_token)
        try:
            await client.request({"type": "join", "session_id": session_id})
            replies = [
                await client.request(
                    {
                        "type": "message",
                        "session_id": session_id,
                        "content": f"m{n}",
                        "reply": "none",
                    }
                )
                for n in range(4)
            ]
            assert [r["type"] for r in replies] == ["ack", "ack", "ack", "error"]
            assert replies[3]["code"] == "rate_limited"
            assert 0 < replies[3]["retry_after"] <= 30
            pong = await client.request({"type": "ping"})
            assert pong["type"] == "pong"
        finally:
            await client.close()
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            response = await http.get(f"/v1/sessions/{session_id}/messages", headers=ada.headers)
        contents = [m["content"] for m in response.json()["data"]["messages"]]
        assert contents == ["m0", "m1", "m2"]


async def test_typing_updates_are_throttled_too(database_url: str) -> None:
    async with serve(database_url, typing_per_window=2, typing_window_s=30) as server:
        ada, _, session_id = await pair(server)
        client, _ = await WSClient.connect(server.ws_url, ada.access_token)
        try:
            await client.request({"type": "join", "session_id": session_id})
            replies = [
                await client.request(
                    {"type": "typing", "session_id": session_id, "active": n % 2 == 0}
                )
                for n in range(3)
            ]
        finally:
            await client.close()
    assert [r["type"] for r in replies] == ["ack", "ack", "error"]
    assert replies[2]["code"] == "rate_limited"
    assert replies[2]["retry_after"] > 0


async def test_repeated_abuse_closes_the_connection_with_4429(database_url: str) -> None:
    async with serve(
        database_url, messages_per_window=1, message_window_s=30, abuse_strikes_before_close=3
    ) as server:
        ada, _, session_id = await pair(server)
        client, _ = await WSClient.connect(server.ws_url, ada.access_token)
        try:
            await client.request({"type": "join", "session_id": session_id})
            frame = {
                "type": "message",
                "session_id": session_id,
                "content": "spam",
                "reply": "none",
            }
            assert (await client.request(frame))["type"] == "ack"
            for _ in range(2):
                refused = await client.request(frame)
                assert refused["code"] == "rate_limited"
            await client.send(frame)  # the third strike
            assert await close_code(client) == 4429
            # The strike that closed it was still answered before the close.
            assert [f["code"] for f in client.seen if f["type"] == "error"] == ["rate_limited"] * 3
        finally:
            await client.close()


# Heartbeat ------------------------------------------------------------------------------


@pytest.mark.slow
async def test_a_peer_that_answers_no_ping_is_closed_with_4408_and_a_live_one_stays(
    database_url: str,
) -> None:
    heartbeat = 0.3
    async with serve(database_url, heartbeat_s=heartbeat) as server:
        ada, bob, _ = await pair(server)
        started = asyncio.get_running_loop().time()
        live, _ = await WSClient.connect(server.ws_url, ada.access_token)
        silent = await RawWebSocket.connect(server.port, bob.access_token)
        try:
            welcome = await silent.recv_json("welcome")
            assert welcome["heartbeat_s"] == heartbeat
            # Reads everything, answers nothing: pings go unanswered.
            code = await asyncio.wait_for(silent.recv_close(), 10 * heartbeat)
            assert code == 4408
            assert asyncio.get_running_loop().time() - started >= 2 * heartbeat - 0.05
            await eventually(lambda: len(server.container.hub.connections) == 1)

            # The websockets client answers every ping: still there well after.
            await asyncio.sleep(
                max(0.0, started + 6 * heartbeat - asyncio.get_running_loop().time())
            )
            pong = await live.request({"type": "ping"})
            assert pong["type"] == "pong"
        finally:
            silent.close()
            await live.close()


# Slow clients ---------------------------------------------------------------------------


@pytest.mark.slow
async def test_a_client_that_stops_reading_is_dropped_and_the_room_keeps_flowing(
    database_url: str,
) -> None:
    big = 400_000
    async with serve(
        database_url,
        send_queue_frames=16,
        messages_per_window=1000,
        max_content_chars=big,
        max_frame_bytes=1_048_576,
    ) as server:
        hub = server.container.hub
        ada, bob, session_id = await pair(server)
        sender, _ = await WSClient.connect(server.ws_url, ada.access_token, max_size=2**21)
        slow = await RawWebSocket.connect(server.port, bob.access_token, receive_buffer=4096)
        try:
            await sender.request({"type": "join", "session_id": session_id})
            await slow.recv_json("welcome")
            await slow.send_json({"type": "join", "session_id": session_id, "id": "j"})
            await slow.recv_json("joined")
            (slow_id,) = [c.conn_id for c in hub.connections.values() if c.user_id == bob.id]
            # From here on the slow client reads nothing.

            count = 40
            for n in range(count):
                ack = await sender.request(
                    {
                        "type": "message",
                        "session_id": session_id,
                        "content": f"{n:04d}" + "x" * (big - 4),
                        "reply": "none",
                    },
                    timeout=10,
                )
                assert ack["type"] == "ack"
            seqs = [(await sender.next("message"))["message"]["seq"] for _ in range(count)]
            assert seqs == list(range(1, count + 1))

            await eventually(lambda: slow_id not in hub.connections, timeout=10)
            assert all(bob.id != c.user_id for room in hub.rooms.values() for c in room.connections)
            async with httpx.AsyncClient(base_url=server.http_url) as http:
                text = (await http.get("/metrics")).text
            assert metric(text, "parley_slow_clients_dropped_total") == 1
            assert metric(text, "parley_ws_connections") == 1
            # The server let go of the socket too: past what the kernel still held, the
            # slow client finds it reset or ended.
            with pytest.raises((asyncio.IncompleteReadError, ConnectionResetError)):
                while True:
                    await asyncio.wait_for(slow.recv(), 5)
        finally:
            slow.close()
            await sender.close()
