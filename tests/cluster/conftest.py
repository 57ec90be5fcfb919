"""Real server processes on loopback ports sharing PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest

from tests.conftest import TEST_JWT_SECRET, TestUser, create_session, register_user
from tests.fakes.openrouter import FakeOpenRouter
from tests.private_redis import private_redis, redis_proxy  # noqa: F401  (fixtures)
from tests.services import require_redis
from tests.wsclient import WSClient

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Node:
    """One ``parley serve`` process."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path, port: int | None = None):
        self.name = name
        self.env = env
        self.port = port or free_port()
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    async def start(self, timeout_s: float = 20.0) -> None:
        with self.log_path.open("ab") as log:
            self.process = self._spawn(log)
        deadline = asyncio.get_running_loop().time() + timeout_s
        async with httpx.AsyncClient() as client:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited: {self.log_path.read_text()[-2000:]}")
                try:
                    if (await client.get(self.http_url + "/healthz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"{self.name} did not start: {self.log_path.read_text()}")
                await asyncio.sleep(0.1)

    def _spawn(self, log: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                str(Path(sys.executable).parent / "parley"),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            cwd=ROOT,
            env={**os.environ, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    async def terminate(self, timeout_s: float = 30.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.process.wait, timeout_s)


@pytest.fixture
async def cluster(postgres_database: str, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start nodes sharing the test run's PostgreSQL database and the real Redis."""
    redis_url = require_redis()
    nodes: list[Node] = []

    async def start_node(name: str, port: int | None = None, **env: str) -> Node:
        node_env = {
            "DATABASE_URL": postgres_database,
            "REDIS_URL": redis_url,
            "JWT_SECRET": TEST_JWT_SECRET,
            "PRESENCE_TTL_S": "3",
            "LOG_JSON": "false",
            "LOG_LEVEL": "WARNING",
            "OFFLINE_TOKEN_DELAY_S": "0.02",
            "DRAIN_TIMEOUT_S": "5",
            # Every test logs in from 127.0.0.1 and the limits live in the shared Redis.
            "LOGIN_ATTEMPTS_PER_WINDOW": "100000",
            "MESSAGES_PER_WINDOW": "100000",
            "JOINS_PER_WINDOW": "100000",
            "FRAMES_PER_WINDOW": "100000",
        }
        node_env.update({k.upper(): v for k, v in env.items()})
        node = Node(name, node_env, tmp_path, port)
        nodes.append(node)
        await node.start()
        return node

    yield start_node
    for node in nodes:
        node.kill()


async def shared_room(node: Node, title: str = "cluster") -> tuple[TestUser, TestUser, str]:
    """Ada's session with Bob added, made through ``node``'s REST side."""
    async with httpx.AsyncClient(base_url=node.http_url) as http:
        ada = await register_user(http, "Ada")
        bob = await register_user(http, "Bob")
        session_id = await create_session(http, ada, title=title)
        response = await http.post(
            f"/v1/sessions/{session_id}/members", json={"user_id": bob.id}, headers=ada.headers
        )
        assert response.status_code == 201, response.text
    return ada, bob, session_id


async def joined(node: Node, user: TestUser, session_id: str) -> WSClient:
    """``user`` connected to ``node`` and joined to ``session_id``."""
    client, _ = await WSClient.connect(node.ws_url, user.access_token)
    await client.request({"type": "join", "session_id": session_id})
    return client


def upstream_of(fake: FakeOpenRouter) -> dict[str, str]:
    """Node settings that point the assistant at the loopback fake OpenRouter."""
    return {"openrouter_api_key": "sk-or-test", "openrouter_base_url": fake.base_url}


class AnsweredRoom(NamedTuple):
    """Two nodes asking the fake OpenRouter, and Ada and Bob in one room, one per node."""

    node_a: Node
    node_b: Node
    session_id: str
    ada_ws: WSClient
    bob_ws: WSClient
    bob: TestUser


async def answered_room(
    cluster: Callable[..., Any], fake: FakeOpenRouter, title: str
) -> AnsweredRoom:
    upstream = upstream_of(fake)
    node_a, node_b = await cluster("a", **upstream), await cluster("b", **upstream)
    ada, bob, session_id = await shared_room(node_a, title)
    ada_ws = await joined(node_a, ada, session_id)
    bob_ws = await joined(node_b, bob, session_id)
    return AnsweredRoom(node_a, node_b, session_id, ada_ws, bob_ws, bob)
