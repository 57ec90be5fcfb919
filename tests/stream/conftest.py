from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from server.app import create_app
from server.config import Settings
from tests.conftest import LiveServer, make_settings
from tests.fakes.openrouter import FakeOpenRouter, fake_openrouter
from tests.wsclient import Frame, WSClient

__all__ = ["fake_openrouter"]


@pytest.fixture
def settings(database_url: str, fake_openrouter: FakeOpenRouter) -> Settings:
    """The app talks to the fake OpenRouter on loopback."""
    return make_settings(
        database_url,
        openrouter_api_key="sk-or-test",
        openrouter_base_url=fake_openrouter.base_url,
        llm_model="openai/gpt-4o-mini",
        llm_breaker_reset_s=0.3,
    )


@pytest.fixture
async def offline_server(database_url: str) -> AsyncIterator[LiveServer]:
    server = LiveServer(create_app(make_settings(database_url, offline_token_delay_s=0.0)))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@dataclass
class Streamed:
    start: Frame
    deltas: list[Frame] = field(default_factory=list)
    statuses: list[Frame] = field(default_factory=list)
    end: Frame | None = None

    @property
    def text(self) -> str:
        return "".join(d["text"] for d in sorted(self.deltas, key=lambda d: d["index"]))


async def collect_stream(
    client: WSClient, stream_id: str | None = None, timeout: float = 10.0
) -> Streamed:
    """Everything one client receives of one stream, through its ``stream.end``."""

    def ours(frame: dict[str, Any]) -> bool:
        return stream_id is None or frame.get("stream_id") == stream_id

    start = await client.next("stream.start", ours, timeout)
    streamed = Streamed(start)
    sid = start["stream_id"]
    while streamed.end is None:
        frame = await client.next(
            where=lambda f: f.get("stream_id") == sid and f["type"] != "stream.start",
            timeout=timeout,
        )
        if frame["type"] == "stream.delta":
            streamed.deltas.append(frame)
        elif frame["type"] == "stream.status":
            streamed.statuses.append(frame)
        elif frame["type"] == "stream.end":
            streamed.end = frame
    return streamed
