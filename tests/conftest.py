"""Shared fixtures: the real app on SQLite and on PostgreSQL, real clients.

Every test that takes ``app``/``client``/``live_server`` runs once per database back
end: SQLite in a fresh file, and PostgreSQL in a database made for this test run.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette

from server.app import create_app
from server.config import Settings, load_settings
from server.serving import uvicorn_config
from tests.services import POSTGRES_URL, require_postgres
from tests.wsclient import WSClient

TEST_JWT_SECRET = "test-secret-" + "x" * 40
BACKENDS = os.environ.get("PARLEY_TEST_BACKENDS", "sqlite,postgres").split(",")


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A database of its own for this test run, migrated by the first app that starts."""
    require_postgres()
    name = f"parley_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin_dsn = POSTGRES_URL.replace("postgresql+asyncpg", "postgresql")

    async def run(statement: str) -> None:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    yield POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


ONE_BACKEND = "sqlite" if "sqlite" in BACKENDS else BACKENDS[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A test whose outcome cannot depend on the database (``storage_free``: input
    # checks, headers, frames refused before any read or write) runs on one back end,
    # not on each: SQLite when it is among them.
    kept: list[pytest.Item] = []
    other_backends: list[pytest.Item] = []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if (
            item.get_closest_marker("storage_free") is not None
            and params.get("backend", ONE_BACKEND) != ONE_BACKEND
        ):
            other_backends.append(item)
        else:
            kept.append(item)
    if other_backends:
        config.hook.pytest_deselected(items=other_backends)
        items[:] = kept


@pytest.fixture
def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "postgres":
        return str(request.getfixturevalue("postgres_database"))
    return f"sqlite+aiosqlite:///{tmp_path / 'parley.db'}"


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "jwt_secret": TEST_JWT_SECRET,
        "redis_url": None,
        "openrouter_api_key": None,
        "tavily_api_key": None,
        "offline_token_delay_s": 0.0,
        "log_json": False,
        "sweep_interval_s": 3600,
        "gc_freeze": False,  # many apps share one test process
    }
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture
def settings(database_url: str) -> Settings:
    return make_settings(database_url)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Starlette]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


@dataclass
class TestUser:
    __test__ = False  # a fixture value, not a test class

    id: str
    email: str
    name: str
    password: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


async def register_user(client: httpx.AsyncClient, name: str = "Ada") -> TestUser:
    email = f"{name.lower()}-{uuid.uuid4().hex[:8]}@example.com"
    password = "correct horse battery"
    response = await client.post(
        "/v1/auth/register", json={"email": email, "password": password, "name": name}
    )
    # 201 and the same neutral body whether or not the address was free (no tokens).
    assert response.status_code == 201, response.text
    response = await client.post("/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    return TestUser(
        id=data["user"]["id"],
        email=email,
        name=name,
        password=password,
        access_token=data["access_token"],
        refresh_token=data["refresh_token"],
    )


async def create_session(client: httpx.AsyncClient, user: TestUser, **body: Any) -> str:
    response = await client.post("/v1/sessions", json=body, headers=user.headers)
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


async def shared_room(
    client: httpx.AsyncClient, names: list[str], **body: Any
) -> tuple[list[TestUser], str]:
    """Users registered under ``names``, the first owning a new session that every
    other one is added to."""
    users = [await register_user(client, name) for name in names]
    session_id = await create_session(client, users[0], **body)
    for user in users[1:]:
        response = await client.post(
            f"/v1/sessions/{session_id}/members",
            json={"user_id": user.id},
            headers=users[0].headers,
        )
        assert response.status_code == 201, response.text
    return users, session_id


class LiveServer:
    """The real app served by uvicorn on a loopback port, inside the test's event loop."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.server: uvicorn.Server | None = None
        self.task: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self) -> None:
        settings = self.app.state.settings
        config = uvicorn_config(self.app, settings, host="127.0.0.1", port=0)
        self.server = uvicorn.Server(config)
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self.task.done():
                self.task.result()
            await asyncio.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None and self.task is not None:
            self.server.should_exit = True
            await asyncio.wait_for(self.task, 15)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    @property
    def container(self) -> Any:
        return self.app.state.container


@pytest.fixture
async def live_server(settings: Settings) -> AsyncIterator[LiveServer]:
    server = LiveServer(create_app(settings))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def live_client(live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_server.http_url) as c:
        yield c


Connect = Callable[..., Awaitable["WSClient"]]


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
