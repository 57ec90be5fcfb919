"""The documented SSE plugin (``docs/examples/sse_plugin.py``) against the real server,
through a proxy that cuts its first connection in the middle of the answer."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from tests.conftest import LiveServer, TestUser
from tests.fakes.openrouter import FakeOpenRouter, Stream

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "sse_plugin.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sse_plugin", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.asynccontextmanager
async def cutting_proxy(port: int, cut_after: bytes, times: int) -> AsyncIterator[int]:
    """A loopback TCP proxy to ``port`` that drops its first connection once the
    server has sent ``cut_after`` ``times`` times."""
    connections = 0

    async def serve(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        cut = connections == 1
        server_r, server_w = await asyncio.open_connection("127.0.0.1", port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, watch: bool) -> None:
            seen = 0
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
                    seen += data.count(cut_after) if watch else 0
                    if cut and seen >= times:
                        break
            for writer in (client_w, server_w):
                writer.close()

        await asyncio.gather(pipe(client_r, server_w, False), pipe(server_r, client_w, True))

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def test_the_sse_example_finishes_an_answer_its_connection_lost_half_way(
    live_server: LiveServer,
    room: tuple[TestUser, TestUser, str],
    fake_openrouter: FakeOpenRouter,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ada, _, session_id = room
    words = [f"w{i} " for i in range(40)]
    fake_openrouter.enqueue(Stream(words, delay_s=0.02))
    example = load_example()

    async with cutting_proxy(live_server.port, b"event: stream.delta", times=5) as port:
        answer = await example.ask(f"http://127.0.0.1:{port}", ada.access_token, session_id, "go")

    assert answer == "".join(words)
    async with httpx.AsyncClient(base_url=live_server.http_url) as http:
        history = await http.get(f"/v1/sessions/{session_id}/messages", headers=ada.headers)
    messages = history.json()["data"]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]  # the retry stored nothing
    printed = capsys.readouterr()
    assert printed.out.strip() == answer.strip()
    assert "connection lost" in printed.err
