"""A loopback OpenRouter that speaks the documented bytes.

A Starlette app served by uvicorn in a background thread on 127.0.0.1 (a socket bound
to port 0 before the thread starts, so clients may connect at once). Tests program it
with scenarios, per model or for any model, and read back what it was asked::

    fake.enqueue(HttpError(503), Stream(["Hi", "!"]), model="a/b")   # one use each
    fake.defaults["c/d"] = Hang()                                    # every request
    ... fake.chat_models -> ["a/b", "a/b", ...]; fake.disconnected.wait(5)

Bytes on the wire, as documented by OpenRouter: ``: OPENROUTER PROCESSING`` comment
lines, ``data: {chat.completion.chunk}`` events, a usage chunk with empty
``choices``, ``data: [DONE]``; errors before the stream as a status with
``{"error": {"code", "message", "metadata"}}``; errors mid-stream as a chunk with a
top-level ``error`` and ``finish_reason: "error"``.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from llm.tokens import count_messages, count_text
from tests.fakes.loopback import LoopbackServer

COMMENT = b": OPENROUTER PROCESSING\n\n"
DONE = b"data: [DONE]\n\n"
CREATED = 1_700_000_000


@dataclass(frozen=True)
class Stream:
    """A normal reply: a comment, then each token (a comment between tokens when
    ``comments`` is set), the finish chunk, the usage chunk and ``[DONE]``.
    ``hang_after`` keeps the stream open with comments only after the tokens;
    ``linger_after_done`` keeps the body open (comments) after ``[DONE]``."""

    tokens: list[str]
    delay_s: float = 0.0
    comments: bool = True
    finish_reason: str = "stop"
    usage: bool = True
    hang_after: bool = False
    tool_calls: list[dict[str, Any]] | None = None
    linger_after_done: bool = False


@dataclass(frozen=True)
class HttpError:
    status: int
    message: str = "upstream error"
    retry_after: float | None = None
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True)
class MidStreamError:
    tokens_before: list[str]
    code: str = "server_error"
    message: str = "Provider disconnected unexpectedly"


@dataclass(frozen=True)
class Hang:
    """Headers, then only comment lines every ``comment_every_s`` (or nothing at all
    when None) until the client goes away."""

    comment_every_s: float | None = 0.02


@dataclass(frozen=True)
class Silent:
    """Reads the request and sends nothing, not even the headers, until the client
    goes away (an upstream hung before its first byte)."""


@dataclass(frozen=True)
class Cut:
    """``tokens_before``, then the connection is dropped in the middle of the body."""

    tokens_before: list[str]


@dataclass(frozen=True)
class Fast:
    """``n`` tokens as fast as the server can write them (benchmarks)."""

    n: int
    token: str = "tok "


Scenario = Stream | HttpError | MidStreamError | Hang | Fast | Silent | Cut


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    json: dict[str, Any] | None
    query: dict[str, str] = field(default_factory=dict)
    # The caller's (host, port): requests on one kept-alive connection share it.
    peer: tuple[str, int] | None = None


class FakeOpenRouter:
    def __init__(self) -> None:
        self.base_url = ""
        self.script: dict[str, deque[Scenario]] = {}
        self.queue: deque[Scenario] = deque()
        self.defaults: dict[str, Scenario] = {}
        self.default: Scenario = Stream(["Hello", " from", " the", " fake", "."])
        self.models: dict[str, int] = {
            "openai/gpt-4o-mini": 128_000,
            "anthropic/claude-3.5-sonnet": 200_000,
            "meta-llama/llama-3-8b-instruct": 8192,
        }
        # Models whose /models entry lists "tools" among supported_parameters.
        self.tool_models: set[str] = set()
        self.generations: dict[str, dict[str, Any]] = {}
        self.requests: list[RecordedRequest] = []
        self.disconnected = threading.Event()
        self.disconnects = 0
        self._counter = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()

    # -- programming -----------------------------------------------------------------

    def enqueue(self, *scenarios: Scenario, model: str | None = None) -> None:
        """Scenarios used once each, in order: for ``model``, or for any model."""
        with self._lock:
            target = self.queue if model is None else self.script.setdefault(model, deque())
            target.extend(scenarios)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    @property
    def chat_models(self) -> list[str]:
        return [str((r.json or {}).get("model")) for r in self.chat_requests]

    def _next(self, model: str) -> Scenario:
        with self._lock:
            if self.script.get(model):
                return self.script[model].popleft()
            if self.queue:
                return self.queue.popleft()
            return self.defaults.get(model, self.default)

    def _generation_id(self) -> str:
        with self._lock:
            self._counter += 1
            return f"gen-fake-{self._counter}"

    async def wait_disconnect(self, timeout_s: float = 5.0) -> bool:
        """Whether the upstream saw a client go away within ``timeout_s``."""
        return await asyncio.to_thread(self.disconnected.wait, timeout_s)

    # -- the app -----------------------------------------------------------------------

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/api/v1/chat/completions", _ChatEndpoint(self), methods=["POST"]),
                Route("/api/v1/models", self._models, methods=["GET"]),
                Route("/api/v1/generation", self._generation, methods=["GET"]),
            ]
        )

    def _record(self, scope: Scope, body: dict[str, Any] | None) -> None:
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        query = dict(
            pair.split("=", 1) for pair in scope["query_string"].decode().split("&") if "=" in pair
        )
        with self._lock:
            self.requests.append(
                RecordedRequest(
                    scope["method"], scope["path"], headers, body, query, tuple(scope["client"])
                )
            )

    async def _models(self, request: Request) -> Response:
        self._record(request.scope, None)
        data = [
            {
                "id": model,
                "name": model,
                "created": CREATED,
                "context_length": length,
                "pricing": {"prompt": "0.00000015", "completion": "0.0000006"},
                "top_provider": {"context_length": length, "max_completion_tokens": 16384},
                "supported_parameters": ["max_tokens", "temperature", "response_format"]
                + (["tools", "tool_choice"] if model in self.tool_models else []),
            }
            for model, length in self.models.items()
        ]
        return JSONResponse({"data": data})

    async def _generation(self, request: Request) -> Response:
        self._record(request.scope, None)
        found = self.generations.get(request.query_params.get("id", ""))
        if found is None:
            return _error_response(404, "Generation not found")
        return JSONResponse({"data": found})


class _ChatEndpoint:
    """A raw ASGI endpoint, so that it can watch for the client's disconnect itself."""

    def __init__(self, fake: FakeOpenRouter) -> None:
        self.fake = fake

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        body = orjson.loads(raw) if raw else {}
        self.fake._record(scope, body)
        scenario = self.fake._next(str(body.get("model")))

        if isinstance(scenario, HttpError):
            await _error_response(scenario.status, scenario.message, scenario)(scope, receive, send)
            return

        if isinstance(scenario, Silent):
            await _wait_disconnect(receive)
            with self.fake._lock:
                self.fake.disconnects += 1
            self.fake.disconnected.set()
            return

        reply = _Reply(self.fake, body, send)
        if not body.get("stream"):
            await reply.whole(scenario, scope, receive)
            return
        serving = asyncio.ensure_future(reply.serve(scenario))
        watching = asyncio.ensure_future(_wait_disconnect(receive))
        done, _ = await asyncio.wait({serving, watching}, return_when=asyncio.FIRST_COMPLETED)
        if watching in done and not reply.complete:
            serving.cancel()
            reply.record(cancelled=True)
            with self.fake._lock:
                self.fake.disconnects += 1
            self.fake.disconnected.set()
        else:
            watching.cancel()
        await asyncio.gather(serving, watching, return_exceptions=True)
        if isinstance(scenario, Cut):
            # An ASGI app that fails after starting its response makes uvicorn close
            # the connection without ending the chunked body: a dropped connection.
            raise _CutConnection


class _CutConnection(Exception):
    pass


class _Reply:
    def __init__(self, fake: FakeOpenRouter, body: dict[str, Any], send: Send) -> None:
        self.fake = fake
        self.send = send
        self.model = str(body.get("model"))
        self.id = fake._generation_id()
        self.prompt_tokens = count_messages(body.get("messages") or [])
        self.sent_text = ""
        self.recorded = False
        self.complete = False

    async def serve(self, scenario: Scenario) -> None:
        await self.send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream"),
                    (b"cache-control", b"no-cache"),
                    (b"x-generation-id", self.id.encode()),
                ],
            }
        )
        await self.write(COMMENT)
        if isinstance(scenario, Stream):
            await self.stream(scenario)
        elif isinstance(scenario, MidStreamError):
            for token in scenario.tokens_before:
                await self.token(token)
            error = {"code": scenario.code, "message": scenario.message}
            await self.event(self.chunk({"content": ""}, "error", error=error))
        elif isinstance(scenario, Cut):
            for token in scenario.tokens_before:
                await self.token(token)
            return
        elif isinstance(scenario, Fast):
            await self.write(
                b"".join(_event(self.chunk({"content": scenario.token})) for _ in range(scenario.n))
            )
            self.sent_text = scenario.token * scenario.n
            await self.finish("stop")
        elif isinstance(scenario, Hang):
            await self.hang(scenario.comment_every_s)
        self.record(cancelled=False)
        self.complete = True
        await self.send({"type": "http.response.body", "body": b"", "more_body": False})

    async def whole(self, scenario: Scenario, scope: Scope, receive: Receive) -> None:
        """A non-streaming answer (``stream`` false): one ``chat.completion`` body."""
        if isinstance(scenario, Hang):
            await _wait_disconnect(receive)
            return
        if isinstance(scenario, MidStreamError):
            error = {"code": 502, "message": scenario.message}
            await JSONResponse({"error": error})(scope, receive, self.send)
            return
        assert not isinstance(scenario, HttpError | Silent | Cut)
        text = "".join(scenario.tokens) if isinstance(scenario, Stream) else ""
        if isinstance(scenario, Fast):
            text = scenario.token * scenario.n
        self.sent_text = text
        self.record(cancelled=False)
        completion = count_text(text)
        payload = {
            "id": self.id,
            "provider": "FakeProvider",
            "model": self.model,
            "object": "chat.completion",
            "created": CREATED,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": completion,
                "total_tokens": self.prompt_tokens + completion,
            },
        }
        headers = {"X-Generation-Id": self.id}
        await JSONResponse(payload, headers=headers)(scope, receive, self.send)

    async def stream(self, scenario: Stream) -> None:
        for token in scenario.tokens:
            if scenario.delay_s:
                await asyncio.sleep(scenario.delay_s)
            if scenario.comments:
                await self.write(COMMENT)
            await self.token(token)
        if scenario.hang_after:
            await self.hang(0.02)
        for index, call in enumerate(scenario.tool_calls or []):
            await self.event(self.chunk({"tool_calls": [{"index": index, **call}]}))
        await self.finish(scenario.finish_reason, usage=scenario.usage)
        if scenario.linger_after_done:
            await self.hang(0.02)

    async def hang(self, every_s: float | None) -> None:
        while not self.fake._closing.is_set():
            await asyncio.sleep(every_s or 0.05)
            if every_s is not None:
                await self.write(COMMENT)

    async def token(self, text: str) -> None:
        await self.event(self.chunk({"role": "assistant", "content": text}))
        self.sent_text += text

    async def finish(self, reason: str, *, usage: bool = True) -> None:
        await self.event(self.chunk({"role": "assistant", "content": ""}, reason))
        if usage:
            completion = count_text(self.sent_text)
            await self.event(
                {
                    "id": self.id,
                    "provider": "FakeProvider",
                    "model": self.model,
                    "object": "chat.completion.chunk",
                    "created": CREATED,
                    "choices": [],
                    "usage": {
                        "prompt_tokens": self.prompt_tokens,
                        "completion_tokens": completion,
                        "total_tokens": self.prompt_tokens + completion,
                    },
                }
            )
        await self.write(DONE)

    def chunk(
        self, delta: dict[str, Any], finish: str | None = None, error: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.id,
            "provider": "FakeProvider",
            "model": self.model,
            "object": "chat.completion.chunk",
            "created": CREATED,
        }
        if error is not None:
            chunk["error"] = error
        chunk["choices"] = [
            {
                "index": 0,
                "delta": delta,
                "finish_reason": finish,
                "native_finish_reason": finish,
                "logprobs": None,
            }
        ]
        return chunk

    async def event(self, payload: dict[str, Any]) -> None:
        await self.write(_event(payload))

    async def write(self, data: bytes) -> None:
        await self.send({"type": "http.response.body", "body": data, "more_body": True})

    def record(self, *, cancelled: bool) -> None:
        if self.recorded:
            return
        self.recorded = True
        self.fake.generations[self.id] = {
            "id": self.id,
            "model": self.model,
            "streamed": True,
            "cancelled": cancelled,
            "tokens_prompt": self.prompt_tokens,
            "tokens_completion": count_text(self.sent_text),
            "native_tokens_prompt": self.prompt_tokens,
            "native_tokens_completion": count_text(self.sent_text),
            "finish_reason": None if cancelled else "stop",
        }


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


async def _wait_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _error_response(status: int, message: str, scenario: HttpError | None = None) -> Response:
    error: dict[str, Any] = {"code": status, "message": message}
    headers: dict[str, str] = {}
    if scenario is not None:
        if scenario.metadata is not None:
            error["metadata"] = scenario.metadata
        if scenario.retry_after is not None:
            headers["Retry-After"] = f"{scenario.retry_after:g}"
    return JSONResponse({"error": error}, status_code=status, headers=headers)


@contextmanager
def serve_fake_openrouter() -> Iterator[FakeOpenRouter]:
    fake = FakeOpenRouter()
    # httptools (uvicorn's default) rather than h11: the benchmark's direct reader
    # measures this server, and it should be as fast as it can be.
    served = LoopbackServer(fake.app(), http="auto", backlog=128, grace_s=2)
    fake.base_url = f"http://127.0.0.1:{served.port}/api/v1"
    served.start()
    try:
        yield fake
    finally:
        fake._closing.set()
        served.stop()


@pytest.fixture
def fake_openrouter() -> Iterator[FakeOpenRouter]:
    with serve_fake_openrouter() as fake:
        yield fake
