"""A loopback Tavily: the documented ``POST /search`` with programmable failures.

Served by a real uvicorn on 127.0.0.1 in a background thread, so that the client
under test goes through real sockets, real HTTP parsing and real timeouts. Bodies and
statuses follow Tavily's documentation: success ``{"query", "follow_up_questions",
"answer", "images", "results": [{title, url, content, score, raw_content}],
"response_time", "request_id"}``; failure ``{"detail": {"error": "…"}}`` with 400,
401, 429 (+ ``Retry-After``), 432, 433 or 500.

Use the ``fake_tavily`` fixture (registered in ``tests/conftest.py`` files that
import it) and set ``fake.mode`` (``"ok"``, ``"down"``, ``"rate_limited"``,
``"out_of_credit"``, ``"payg_limit"``, ``"hang"`` (nothing, not even headers),
``"slow"`` (the normal answer after ``slow_s``), ``"invalid_json"`` (a 200 whose body
is not JSON), ``"huge"`` (a 200 with a valid JSON body of ``huge_bytes``, streamed in
pieces; ``huge_sent`` counts what the client took)); ``fake.fail_times`` makes the
first N requests fail with that mode and the rest succeed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.loopback import LoopbackServer

API_KEY = "tvly-test-0123456789abcdef"


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return _json({"detail": {"error": message}}, status, headers)


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeTavily:
    base_url: str = ""
    api_key: str = API_KEY
    mode: str = "ok"
    fail_times: int | None = None  # None: every request follows ``mode``
    retry_after_s: int = 7
    slow_s: float = 5.0
    huge_bytes: int = 8 * 1024 * 1024
    huge_sent: int = 0
    results: list[dict[str, Any]] | None = None  # None: three made up from the query
    requests: list[RecordedRequest] = field(default_factory=list)
    _hung: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = field(default_factory=list)

    def release_hung(self) -> None:
        for loop, event in self._hung:
            loop.call_soon_threadsafe(event.set)

    def _failing(self) -> bool:
        if self.mode == "ok":
            return False
        if self.fail_times is None:
            return True
        return len(self.requests) <= self.fail_times

    def _results_for(self, query: str, max_results: int) -> list[dict[str, Any]]:
        if self.results is not None:
            chosen = self.results
        else:
            slug = "-".join(query.lower().split())[:40]
            chosen = [
                {
                    "title": f"Result {n} about {query}",
                    "url": f"https://example.org/{slug}/{n}",
                    "content": f"Excerpt {n}: what the page says about {query}.",
                    "score": round(0.9 - n * 0.1, 3),
                    "raw_content": None,
                }
                for n in range(1, 4)
            ]
        return chosen[:max_results]

    async def search(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            body = {}
        self.requests.append(
            RecordedRequest(request.method, request.url.path, dict(request.headers), body)
        )
        auth = request.headers.get("authorization", "")
        if auth != f"Bearer {self.api_key}" and body.get("api_key") != self.api_key:
            return _error(401, "Unauthorized: missing or invalid API key.")
        if self._failing():
            return await self._fail()
        query = body.get("query")
        if not isinstance(query, str) or not query.strip():
            return _error(400, "Query is missing.")
        if body.get("search_depth", "basic") not in ("basic", "advanced", "fast", "ultra-fast"):
            return _error(400, "Invalid search depth.")
        max_results = body.get("max_results", 5)
        if not isinstance(max_results, int) or not 0 <= max_results <= 20:
            return _error(400, "max_results must be between 0 and 20.")
        answer = f"A short answer about {query}." if body.get("include_answer") else None
        return _json(
            {
                "query": query,
                "follow_up_questions": None,
                "answer": answer,
                "images": [],
                "results": self._results_for(query, max_results),
                "response_time": 0.42,
                "request_id": str(uuid.uuid4()),
            }
        )

    async def _fail(self) -> Response:
        if self.mode == "slow":
            await asyncio.sleep(self.slow_s)
            return _json({"query": "slow", "results": self._results_for("slow", 5)})
        if self.mode == "invalid_json":
            return Response(b"<html>502 Bad Gateway</html>", 200, media_type="application/json")
        if self.mode == "huge":
            return StreamingResponse(self._huge_body(), media_type="application/json")
        if self.mode == "down":
            return _error(500, "Internal Server Error")
        if self.mode == "rate_limited":
            return _error(
                429,
                "Your request has been blocked due to excessive requests. "
                "Please reduce rate of requests.",
                {"Retry-After": str(self.retry_after_s)},
            )
        if self.mode == "out_of_credit":
            return _error(
                432,
                "This request exceeds your plan's set usage limit. Please upgrade your "
                "plan or contact support@tavily.com",
            )
        if self.mode == "payg_limit":
            return _error(
                433,
                "This request exceeds the pay-as-you-go limit. You can increase your "
                "limit on the Tavily dashboard.",
            )
        if self.mode == "hang":
            event = asyncio.Event()
            self._hung.append((asyncio.get_running_loop(), event))
            await event.wait()
            return _error(504, "Gateway Timeout")
        raise AssertionError(f"unknown fake Tavily mode {self.mode!r}")

    async def _huge_body(self) -> AsyncIterator[bytes]:
        """``{"results": [...]}`` of about ``huge_bytes``, 64 KiB at a time: each piece
        is handed over only as the client reads, so ``huge_sent`` shows where it stopped
        (give or take the sockets' buffers)."""
        self.huge_sent = 0
        item = orjson.dumps(
            {"title": "t", "url": "https://example.org/x", "content": "x" * 1000, "score": 0.5}
        )
        piece = b",".join([item] * (64 * 1024 // len(item)))
        yield b'{"results": [' + piece
        self.huge_sent = len(piece)
        while self.huge_sent < self.huge_bytes:
            # Lets Starlette see the client's disconnect (a write to a closed connection
            # returns at once, so without this the whole body "goes out" regardless).
            await asyncio.sleep(0)
            yield b"," + piece
            self.huge_sent += len(piece) + 1
        yield b"]}"


def serve_fake_tavily() -> tuple[FakeTavily, LoopbackServer]:
    fake = FakeTavily()
    app = Starlette(routes=[Route("/search", fake.search, methods=["POST"])])
    served = LoopbackServer(app)
    fake.base_url = f"http://127.0.0.1:{served.port}"
    served.start()
    return fake, served


@pytest.fixture
def fake_tavily() -> Iterator[FakeTavily]:
    fake, served = serve_fake_tavily()
    try:
        yield fake
    finally:
        fake.release_hung()
        served.stop()
