"""A small cluster of real ``parley serve`` processes to break: its own Redis, a proxy in
front of the test run's PostgreSQL database, the loopback fake OpenRouter (and Tavily)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.chaos.harness import ChaosRedis, Member, PgProxy
from tests.cluster.conftest import Node, upstream_of
from tests.conftest import TEST_JWT_SECRET, TestUser, shared_room
from tests.fakes.openrouter import FakeOpenRouter, Stream, fake_openrouter
from tests.fakes.tavily import fake_tavily
from tests.services import services_required

__all__ = ["fake_openrouter", "fake_tavily"]

# A node's start-up (imports, migrations checked, Redis and PostgreSQL reached) takes
# a few seconds, and much longer on a CI machine busy with other suites.
START_TIMEOUT_S = 60.0


@pytest.fixture
async def nodes(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Node]]]:
    """``parley serve`` processes, killed at the end; settings as keyword arguments."""
    started: list[Node] = []

    async def start(name: str, **env: str) -> Node:
        node_env = {
            "JWT_SECRET": TEST_JWT_SECRET,
            "PRESENCE_TTL_S": "3",
            "LOG_JSON": "false",
            "LOG_LEVEL": "WARNING",
            "DRAIN_TIMEOUT_S": "5",
            # Every member logs in from 127.0.0.1.
            "LOGIN_ATTEMPTS_PER_WINDOW": "100000",
            "MESSAGES_PER_WINDOW": "100000",
            **{k.upper(): v for k, v in env.items()},
        }
        node = Node(name, node_env, tmp_path)
        started.append(node)
        await node.start(timeout_s=START_TIMEOUT_S)
        return node

    yield start
    for node in started:
        node.kill()


@pytest.fixture
async def chaos_redis(tmp_path: Path) -> AsyncIterator[ChaosRedis]:
    if shutil.which("redis-server") is None:
        if services_required():
            pytest.fail("redis-server is not installed, and PARLEY_REQUIRE_SERVICES is set")
        pytest.skip("redis-server is not installed")
    server = ChaosRedis(tmp_path)
    await server.start()
    yield server
    server.stop()


@pytest.fixture
async def pg_proxy(postgres_database: str) -> AsyncIterator[PgProxy]:
    proxy = PgProxy.in_front_of(postgres_database)
    await proxy.start()
    yield proxy
    await proxy.stop()


@dataclass
class World:
    """Nodes, one room, and its members spread over the nodes (member i on node i % n)."""

    redis: ChaosRedis
    proxy: PgProxy
    fake: FakeOpenRouter
    nodes: list[Node]
    users: list[TestUser]
    session_id: str
    members: list[Member]

    @property
    def owner(self) -> TestUser:
        return self.users[0]


MakeWorld = Callable[..., Awaitable[World]]


@pytest.fixture
async def world(
    nodes: Callable[..., Awaitable[Node]],
    chaos_redis: ChaosRedis,
    pg_proxy: PgProxy,
    postgres_database: str,
    fake_openrouter: FakeOpenRouter,
) -> AsyncIterator[MakeWorld]:
    made: list[World] = []
    # Short answers by default; each test programs its own when it needs a long one.
    fake_openrouter.default = Stream([f"w{i} " for i in range(20)], delay_s=0.01)

    async def make(n_nodes: int = 2, members: int = 4, **env: str) -> World:
        settings = {
            "redis_url": chaos_redis.url,
            "database_url": pg_proxy.url_for(postgres_database),
            **upstream_of(fake_openrouter),
            **env,
        }
        started = [await nodes(chr(ord("a") + i), **settings) for i in range(n_nodes)]
        async with httpx.AsyncClient(base_url=started[0].http_url, timeout=15) as http:
            users, session_id = await shared_room(
                http, [f"U{i}" for i in range(members)], title="chaos"
            )
        joined = [
            await Member.join(user, started[i % n_nodes], session_id)
            for i, user in enumerate(users)
        ]
        world = World(chaos_redis, pg_proxy, fake_openrouter, started, users, session_id, joined)
        made.append(world)
        return world

    yield make
    for w in made:
        for member in w.members:
            with contextlib.suppress(Exception):
                await member.close()
