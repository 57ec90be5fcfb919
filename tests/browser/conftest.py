"""Browser fixtures: Debian's Chromium driven by Playwright, and the real app served by
uvicorn on a fixed loopback port, so that a test can stop it and start it again on the
same port and database (the page must reconnect on its own).

Only SQLite: these tests are about the page, not the storage back end.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from server.app import create_app
from server.config import Settings
from server.serving import uvicorn_config
from tests.conftest import LiveServer, make_settings

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "correct horse battery"


def require_chromium() -> None:
    if CHROMIUM.exists():
        return
    reason = f"{CHROMIUM} is missing (apt-get install chromium)"
    if os.environ.get("PARLEY_REQUIRE_SERVICES") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PageServer(LiveServer):
    """A LiveServer that keeps its port across restarts."""

    def __init__(self, settings: Settings, port: int) -> None:
        super().__init__(create_app(settings))
        self.settings = settings
        self.fixed_port = port

    async def start(self) -> None:
        config = uvicorn_config(self.app, self.settings, host="127.0.0.1", port=self.fixed_port)
        self.server = uvicorn.Server(config)
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self.task.done():
                self.task.result()
            await asyncio.sleep(0.01)
        self.port = self.fixed_port

    async def restart_on_same_port(self) -> None:
        """A new app (new hub, nothing in memory) on the same port and database."""
        self.app = create_app(self.settings)
        await self.start()


@dataclass
class Watch:
    """Everything a page said that a person would call a failure."""

    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    _pending: set[Any] = field(default_factory=set)

    def attach(self, page: Any) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("dialog", self._dialog)

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text}")

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        # Dismissed so that the page goes on; the test fails on the record, not a hang.
        task = asyncio.ensure_future(dialog.dismiss())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)


@pytest.fixture
def token_delay_s() -> float:
    return 0.01


@pytest.fixture
def server_overrides() -> dict[str, Any]:
    return {}


@pytest.fixture
async def page_server(
    tmp_path: Path, token_delay_s: float, server_overrides: dict[str, Any]
) -> AsyncIterator[PageServer]:
    require_chromium()
    settings = make_settings(
        f"sqlite+aiosqlite:///{tmp_path / 'parley.db'}",
        offline_token_delay_s=token_delay_s,
        **server_overrides,
    )
    server = PageServer(settings, free_port())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    require_chromium()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
def watch() -> Any:
    """Collects console errors, page errors and dialogs; the test fails on any."""
    seen = Watch()
    yield seen
    assert seen.dialogs == [], seen.dialogs
    assert seen.errors == [], seen.errors


def unique_email(name: str) -> str:
    return f"{name.lower()}-{uuid.uuid4().hex[:8]}@example.com"
