"""Graceful shutdown and rolling restarts of real ``parley serve`` processes."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.cluster.conftest import Node, shared_room
from tests.conftest import TestUser
from tests.ws.rawws import close_code
from tests.wsclient import WSClient

pytestmark = pytest.mark.slow
DRAIN_TIMEOUT_S = 1.0
# Limits are counted in the shared Redis (logins per address, messages per user);
# every test here logs in from 127.0.0.1, as other suites do, and talks a lot.
LIMITS = {"login_attempts_per_window": "100000", "messages_per_window": "1000"}


async def history(node: Node, user: TestUser, session_id: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=node.http_url) as http:
        response = await http.get(
            f"/v1/sessions/{session_id}/messages", params={"limit": 200}, headers=user.headers
        )
    assert response.status_code == 200, response.text
    return list(response.json()["data"]["messages"])


async def test_sigterm_closes_websockets_for_reconnect_and_keeps_what_was_acknowledged(
    cluster: Callable[..., Any],
) -> None:
    node_a = await cluster("a", drain_timeout_s=str(DRAIN_TIMEOUT_S), **LIMITS)
    node_b = await cluster("b", **LIMITS)
    ada, _, session_id = await shared_room(node_a)
    client, _ = await WSClient.connect(node_a.ws_url, ada.access_token)
    try:
        await client.request({"type": "join", "session_id": session_id})
        ack = await client.request(
            {"type": "message", "session_id": session_id, "content": "last words", "reply": "none"}
        )
        assert ack["type"] == "ack"

        started = time.monotonic()
        exit_code = await node_a.terminate(timeout_s=DRAIN_TIMEOUT_S + 10)
        elapsed = time.monotonic() - started

        assert await close_code(client) in (1001, 1012)
        # uvicorn re-raises the signal once it has shut down gracefully.
        assert exit_code in (0, -signal.SIGTERM)
        assert elapsed < DRAIN_TIMEOUT_S + 5
    finally:
        await client.close()
    stored = await history(node_b, ada, session_id)
    assert [m["id"] for m in stored] == [ack["message"]["id"]]


async def test_a_generation_running_at_sigterm_ends_for_members_on_the_other_node(
    cluster: Callable[..., Any],
) -> None:
    node_a = await cluster(
        "a", drain_timeout_s=str(DRAIN_TIMEOUT_S), offline_token_delay_s="0.05", **LIMITS
    )
    node_b = await cluster("b", **LIMITS)
    ada, bob, session_id = await shared_room(node_a)
    ada_ws, _ = await WSClient.connect(node_a.ws_url, ada.access_token)
    bob_ws, _ = await WSClient.connect(node_b.ws_url, bob.access_token)
    try:
        await ada_ws.request({"type": "join", "session_id": session_id})
        await bob_ws.request({"type": "join", "session_id": session_id})
        ack = await ada_ws.request(
            {"type": "message", "session_id": session_id, "content": "tell me a story"}
        )
        stream_id = ack["stream_id"]
        await bob_ws.next("stream.delta", lambda f: f["stream_id"] == stream_id)

        await node_a.terminate(timeout_s=DRAIN_TIMEOUT_S + 10)

        end = await bob_ws.next("stream.end", lambda f: f["stream_id"] == stream_id, timeout=10)
        deltas = [f for f in bob_ws.seen if f["type"] == "stream.delta"]
        assert [d["index"] for d in deltas] == list(range(len(deltas)))
    finally:
        await ada_ws.close()
        await bob_ws.close()

    # Finished within the drain timeout, or cut short and kept as partial.
    assert end["finish_reason"] in ("stop", "error")
    if end["finish_reason"] == "error":
        assert end["error"]["code"] == "unavailable"
    message = end["message"]
    assert message["content"] == "".join(d["text"] for d in deltas)
    stored = await history(node_b, ada, session_id)
    assert [m["id"] for m in stored] == [ack["message"]["id"], message["id"]]
    assert stored[-1]["content"] == message["content"]


async def test_a_rolling_restart_loses_and_repeats_no_message_for_a_reconnecting_client(
    cluster: Callable[..., Any],
) -> None:
    node_a = await cluster("a", drain_timeout_s=str(DRAIN_TIMEOUT_S), **LIMITS)
    node_b = await cluster("b", **LIMITS)
    ada, bob, session_id = await shared_room(node_a)
    ada_ws, _ = await WSClient.connect(node_a.ws_url, ada.access_token)
    bob_ws, _ = await WSClient.connect(node_b.ws_url, bob.access_token)
    total = 30
    try:
        await ada_ws.request({"type": "join", "session_id": session_id})
        await bob_ws.request({"type": "join", "session_id": session_id})

        async def talk() -> None:
            for n in range(total):
                reply = await bob_ws.request(
                    {
                        "type": "message",
                        "session_id": session_id,
                        "content": f"b{n}",
                        "reply": "none",
                    }
                )
                assert reply["type"] == "ack", reply
                await asyncio.sleep(0.03)

        talking = asyncio.create_task(talk())
        await ada_ws.next("message", lambda f: f["message"]["seq"] >= 5)
        restart = asyncio.create_task(node_a.terminate(timeout_s=DRAIN_TIMEOUT_S + 10))
        assert await close_code(ada_ws) in (1001, 1012)
        got = [f["message"]["seq"] for f in ada_ws.seen if f["type"] == "message"]

        # Reconnect to the surviving node and ask for what was missed.
        await ada_ws.close()
        ada_ws, _ = await WSClient.connect(node_b.ws_url, ada.access_token)
        joined = await ada_ws.request(
            {"type": "join", "session_id": session_id, "since_seq": got[-1]}
        )
        assert joined["recovered"] is True
        got += [m["seq"] for m in joined["history"]]

        assert await restart in (0, -signal.SIGTERM)
        await node_a.start()
        await talking
        while not got or got[-1] < total:
            got.append((await ada_ws.next("message"))["message"]["seq"])
        assert got == list(range(1, total + 1))

        # The restarted node serves the room again.
        again, _ = await WSClient.connect(node_a.ws_url, ada.access_token)
        try:
            rejoined = await again.request({"type": "join", "session_id": session_id})
            assert rejoined["last_seq"] == total
        finally:
            await again.close()
    finally:
        await ada_ws.close()
        await bob_ws.close()
