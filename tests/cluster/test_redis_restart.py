from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis

from tests.cluster.conftest import free_port, shared_room
from tests.services import services_required
from tests.wsclient import WSClient

pytestmark = pytest.mark.slow


class PrivateRedis:
    """A Redis server of this test's own, so that restarting it disturbs nobody else."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.dir = tmp_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        try:
            for _ in range(100):
                try:
                    await client.ping()
                    return
                except redis.ConnectionError:
                    await asyncio.sleep(0.05)
            raise TimeoutError("private redis did not start")
        finally:
            await client.aclose()

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        if services_required():
            pytest.fail("redis-server is not installed, and PARLEY_REQUIRE_SERVICES is set")
        pytest.skip("redis-server is not installed")
    server = PrivateRedis(tmp_path)
    await server.start()
    yield server
    server.stop()


async def test_members_catch_up_after_redis_restarts_under_a_live_room(
    cluster: Callable[..., Any],
    private_redis: PrivateRedis,
) -> None:
    node_a = await cluster("a", redis_url=private_redis.url)
    node_b = await cluster("b", redis_url=private_redis.url)
    ada, bob, session_id = await shared_room(node_a, "outage")
    ada_ws, _ = await WSClient.connect(node_a.ws_url, ada.access_token)
    bob_ws, _ = await WSClient.connect(node_b.ws_url, bob.access_token)
    try:
        await ada_ws.request({"type": "join", "session_id": session_id})
        await bob_ws.request({"type": "join", "session_id": session_id})
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
    finally:
        await ada_ws.close()
        await bob_ws.close()
