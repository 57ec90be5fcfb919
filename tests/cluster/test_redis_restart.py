from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from tests.cluster.conftest import shared_room
from tests.private_redis import CuttableProxy, PrivateRedis
from tests.wsclient import WSClient

pytestmark = pytest.mark.slow


@contextlib.asynccontextmanager
async def joined_pair(
    node_a: Any, node_b: Any, title: str
) -> AsyncIterator[tuple[WSClient, WSClient, str]]:
    """Ada on node a and Bob on node b, both joined to a new session of theirs."""
    ada, bob, session_id = await shared_room(node_a, title)
    ada_ws, _ = await WSClient.connect(node_a.ws_url, ada.access_token)
    bob_ws, _ = await WSClient.connect(node_b.ws_url, bob.access_token)
    try:
        await ada_ws.request({"type": "join", "session_id": session_id})
        await bob_ws.request({"type": "join", "session_id": session_id})
        yield ada_ws, bob_ws, session_id
    finally:
        await ada_ws.close()
        await bob_ws.close()


async def test_members_catch_up_after_redis_restarts_under_a_live_room(
    cluster: Callable[..., Any],
    private_redis: PrivateRedis,
) -> None:
    node_a = await cluster("a", redis_url=private_redis.url)
    node_b = await cluster("b", redis_url=private_redis.url)
    async with joined_pair(node_a, node_b, "outage") as (ada_ws, bob_ws, session_id):
        await ada_ws.request(
            {"type": "message", "session_id": session_id, "content": "before", "reply": "none"}
        )
        assert (await bob_ws.next("message"))["message"]["content"] == "before"

        private_redis.stop()
        during = await ada_ws.request(
            {"type": "message", "session_id": session_id, "content": "during", "reply": "none"},
            timeout=10,
        )
        assert during["type"] == "ack"  # stored, whatever the bus is doing
        await private_redis.start()

        after = await ada_ws.request(
            {"type": "message", "session_id": session_id, "content": "after", "reply": "none"},
            timeout=10,
        )
        assert after["type"] == "ack"
        contents = [
            (await bob_ws.next("message", timeout=15))["message"]["content"] for _ in range(2)
        ]
        assert contents == ["during", "after"]
        assert bob_ws.unread("message") == []


async def test_a_message_sent_through_a_node_cut_off_from_redis_reaches_the_other_node(
    cluster: Callable[..., Any],
    private_redis: PrivateRedis,
    redis_proxy: CuttableProxy,
) -> None:
    # Uneven reconnects, made certain: node a reaches Redis through a proxy that the
    # test cuts, node b directly. The room is quiet afterwards: no later message may
    # be what brings "during" to Bob.
    node_a = await cluster("a", redis_url=redis_proxy.url)
    node_b = await cluster("b", redis_url=private_redis.url)
    async with joined_pair(node_a, node_b, "uneven") as (ada_ws, bob_ws, session_id):
        await ada_ws.request(
            {"type": "message", "session_id": session_id, "content": "before", "reply": "none"}
        )
        assert (await bob_ws.next("message"))["message"]["content"] == "before"

        redis_proxy.cut()
        assert await ada_ws.next("bus", timeout=10) == {"type": "bus", "status": "degraded"}
        during = await ada_ws.request(
            {"type": "message", "session_id": session_id, "content": "during", "reply": "none"},
            timeout=10,
        )
        assert during["type"] == "ack"
        assert (await ada_ws.next("message", timeout=10))["message"]["content"] == "before"
        assert (await ada_ws.next("message", timeout=10))["message"]["content"] == "during"
        redis_proxy.restore()

        assert (await bob_ws.next("message", timeout=20))["message"]["content"] == "during"
        assert await ada_ws.next("bus", timeout=20) == {"type": "bus", "status": "restored"}
        assert bob_ws.unread("bus") == []  # b's bus never went down


async def test_a_node_paused_past_the_driver_timeout_still_delivers_the_stream_end(
    cluster: Callable[..., Any],
    private_redis: PrivateRedis,
) -> None:
    # The answer runs on node a and ends while node b stands still (SIGSTOP) for longer
    # than redis-py 8's default 5 s socket timeout. The stream.end waits in b's socket;
    # a read that inherited the timeout gave up on resuming and threw it away.
    node_a = await cluster("a", redis_url=private_redis.url, presence_ttl_s="60")
    node_b = await cluster("b", redis_url=private_redis.url, presence_ttl_s="60")
    async with joined_pair(node_a, node_b, "paused") as (ada_ws, bob_ws, session_id):
        ack = await ada_ws.request(
            {"type": "message", "session_id": session_id, "content": "Tell me a story."}
        )
        stream_id = ack["stream_id"]
        await bob_ws.next("stream.start", where=lambda f: f["stream_id"] == stream_id)

        assert node_b.process is not None
        node_b.process.send_signal(signal.SIGSTOP)
        try:
            await ada_ws.next("stream.end", where=lambda f: f["stream_id"] == stream_id)
            await asyncio.sleep(6.5)  # b stays paused past the driver's 5 s
        finally:
            node_b.process.send_signal(signal.SIGCONT)

        end = await bob_ws.next(
            "stream.end", where=lambda f: f["stream_id"] == stream_id, timeout=15
        )
        assert end["message"]["role"] == "assistant"
