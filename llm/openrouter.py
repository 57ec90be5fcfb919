"""OpenRouter's chat completions API, streamed over SSE.

Wire format (https://openrouter.ai/docs/api-reference/streaming, .../errors):

- Failures before the model starts are an HTTP status with a JSON body
  ``{"error": {"code", "message", "metadata"}}``; 429 and 503 may carry Retry-After.
- The stream is ``data: {chat.completion.chunk}`` events with
  ``choices[0].delta.content``, interleaved with ``: OPENROUTER PROCESSING`` comment
  lines while the provider is slow, then a chunk with ``usage`` and empty ``choices``,
  then ``data: [DONE]``.
- A failure mid-stream is a chunk with a top-level ``error`` and
  ``choices[0].finish_reason == "error"``; the status stays 200.
- The generation id is the ``X-Generation-Id`` header (and each chunk's ``id``);
  ``GET /generation?id=`` reports its token counts, also for a cancelled stream.

OpenRouter keeps the connection alive with comments for as long as a provider is
slow, so an HTTP read timeout never fires: the deadlines here count *content*
(first token, idle gap between content chunks, total) and are enforced around each
read (``llm.deadline.MovingDeadline``), whatever else arrives on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import AsyncExitStack, aclosing
from typing import Any

import httpx
import orjson

from errors import ParleyError
from llm.catalog import ModelCatalog
from llm.deadline import MovingDeadline
from llm.metering import Price
from llm.openrouter_chunks import TextChunkShape
from llm.openrouter_errors import (
    body_error,
    deadline_error,
    json_object,
    request_error,
    status_error,
    transport_error,
)
from llm.provider import (
    ChatEvent,
    ChatRequest,
    FinishReason,
    StreamFinished,
    TextDelta,
    ToolCall,
    UpstreamUnavailable,
    Usage,
)
from llm.sse_batch import EventSplitter

log = logging.getLogger(__name__)

# How long to wait, after ``[DONE]``, for the body's end so the connection can be kept.
END_OF_BODY_WAIT_S = 0.1

_FINISH_REASONS: Mapping[str, FinishReason] = {
    "stop": "stop",
    "tool_calls": "stop",
    "function_call": "stop",
    "content_filter": "stop",
    "length": "length",
    "error": "error",
}


class OpenRouterProvider:
    name = "openrouter"

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        api_key: str,
        *,
        referer: str,
        title: str,
        connect_timeout_s: float = 10.0,
        first_token_timeout_s: float = 60.0,
        idle_timeout_s: float = 30.0,
        total_timeout_s: float = 300.0,
        context_length_override: int | None = None,
        catalog_ttl_s: float = 3600.0,
    ) -> None:
        self._client = client
        self._base_url = base_url.rstrip("/")
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "HTTP-Referer": referer,
            "X-Title": title,
        }
        # Completions carry their body encoded by orjson: httpx's ``json=`` uses the
        # standard library, which took 0.45 ms for a 400-turn context in front of
        # every answer's first token (orjson: 0.03 ms).
        self._json_headers = {**self._headers, "Content-Type": "application/json"}
        self._stream_headers = {
            **self._json_headers,
            "Accept": "text/event-stream",
            "Cache-Control": "no-store",
        }
        self._first_token_timeout_s = first_token_timeout_s
        self._idle_timeout_s = idle_timeout_s
        self._total_timeout_s = total_timeout_s
        # The read timeout is only a backstop: the content deadlines below fire first.
        self._timeout = httpx.Timeout(
            connect=connect_timeout_s,
            read=max(first_token_timeout_s, idle_timeout_s) + connect_timeout_s,
            write=connect_timeout_s,
            pool=connect_timeout_s,
        )
        self._tool_capable: set[str] = set()
        self._tool_choice_capable: set[str] = set()
        self._prices: dict[str, Price] = {}
        self.catalog = ModelCatalog(
            self._fetch_models, ttl_s=catalog_ttl_s, override=context_length_override
        )

    @property
    def base_url(self) -> str:
        return self._base_url

    async def price(self, model: str) -> Price | None:
        """Dollars per prompt and completion token, from the catalogue's ``pricing``."""
        await self.catalog.ready()
        return self._prices.get(model)

    async def supports_tools(self, model: str) -> bool:
        """Whether OpenRouter's ``/models`` lists ``tools`` among the model's parameters."""
        await self.catalog.models()
        return model in self._tool_capable

    # -- streaming ---------------------------------------------------------------

    async def stream(self, request: ChatRequest) -> AsyncGenerator[ChatEvent, None]:
        """The answer as events, ending with ``StreamFinished``.

        One policy for every failure (refused, unreachable, late, cut, an error chunk,
        an early end): before the first text it is raised, so that the caller may
        retry or fall back with nothing shown; after it the stream ends with an
        ``error`` finish, so that what was shown stays.
        """
        state = _StreamState(request.model)
        try:
            # Closed with this generator, so that an abandoned stream lets go of the
            # upstream request at once.
            async with aclosing(self._events(request, state)) as events:
                async for event in events:
                    yield event
        except ParleyError as error:
            if not state.text_seen:
                raise
            yield state.finished("error", error)
            return
        yield state.finished(state.finish_reason or "stop", None)

    async def _events(
        self, request: ChatRequest, state: _StreamState
    ) -> AsyncGenerator[ChatEvent, None]:
        """Text deltas and tool calls; any failure raised as a ``ParleyError``."""
        clock = _Clock.start(self._first_token_timeout_s, self._total_timeout_s)
        async with AsyncExitStack() as stack:
            response = await self._open(request, clock, stack)
            state.generation_id = response.headers.get("x-generation-id")
            _trace_generation(request, state, None)
            if not _is_event_stream(response):
                raise UpstreamUnavailable("the model answered with something other than a stream")
            batches = await stack.enter_async_context(aclosing(_event_batches(response)))
            content_deadline = MovingDeadline(clock.deadline)
            stack.callback(content_deadline.close)
            done = False
            while not done:
                try:
                    batch = await _read(batches, content_deadline)
                except StopAsyncIteration:
                    break
                except TimeoutError as exc:
                    raise self._late(clock, state.text_seen) from exc
                except httpx.HTTPError as exc:
                    raise transport_error(exc) from exc
                known_id = state.generation_id
                # Everything that arrived in one read is one delta: per event, the hops
                # through this generator and its callers were most of the relay's cost.
                texts, content, done = _take(batch, state)
                _trace_generation(request, state, known_id)
                if texts:
                    yield TextDelta("".join(texts))
                if state.error is not None:
                    raise state.error
                if content:
                    content_deadline.extend(clock.content_arrived(self._idle_timeout_s))
            if done:
                await _read_to_the_end(batches)
        for call in state.tool_calls():
            yield call
        if state.finish_reason is None and not state.done_ok:
            raise UpstreamUnavailable("the model's stream ended early")

    async def _open(
        self, request: ChatRequest, clock: _Clock, stack: AsyncExitStack
    ) -> httpx.Response:
        """Send the request; the response, once its status is 200."""
        body = _body(request, stream=True)
        if "tool_choice" in body and request.model not in self._tool_choice_capable:
            # A provider that does not take it may refuse the whole request.
            del body["tool_choice"]
        try:
            # The first-token deadline also covers connecting and the headers.
            async with asyncio.timeout_at(clock.deadline):
                response = await stack.enter_async_context(
                    self._client.stream(
                        "POST",
                        f"{self._base_url}/chat/completions",
                        content=orjson.dumps(body),
                        headers=self._stream_headers,
                        timeout=self._timeout,
                        extensions=_sent_hook(request.on_sent),
                    )
                )
                if response.status_code != 200:
                    await response.aread()
                    raise status_error(response)
        except TimeoutError as exc:
            raise deadline_error("did not start answering", clock.first_wait) from exc
        except httpx.HTTPError as exc:
            raise request_error(exc) from exc
        return response

    def _late(self, clock: _Clock, text_seen: bool) -> ParleyError:
        """Which content deadline passed."""
        if clock.deadline >= clock.total_at:
            return deadline_error("did not finish", self._total_timeout_s)
        if text_seen:
            return deadline_error("sent nothing more", self._idle_timeout_s)
        return deadline_error("did not start answering", clock.first_wait)

    # -- one-shot ------------------------------------------------------------------

    async def complete(self, request: ChatRequest) -> str:
        body = _body(request, stream=False)
        try:
            async with asyncio.timeout(self._total_timeout_s):
                response = await self._client.post(
                    f"{self._base_url}/chat/completions",
                    content=orjson.dumps(body),
                    headers=self._json_headers,
                    timeout=self._timeout,
                )
        except TimeoutError as exc:
            raise deadline_error("did not answer", self._total_timeout_s) from exc
        except httpx.HTTPError as exc:
            raise request_error(exc) from exc
        if response.status_code != 200:
            raise status_error(response)
        payload = json_object(response.content)
        if isinstance(payload.get("error"), dict):
            raise body_error(payload["error"])
        if request.trace is not None:
            reported = _usage_of(payload.get("usage"))
            if reported is not None:
                request.trace["usage"] = reported
        try:
            content = payload["choices"][0]["message"].get("content")
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise UpstreamUnavailable("the model sent a reply Parley cannot read") from exc
        return str(content or "")

    # -- catalogue and accounting ----------------------------------------------------

    async def context_length(self, model: str) -> int | None:
        return await self.catalog.context_length(model)

    async def generation_usage(self, generation_id: str) -> Usage | None:
        """Token counts OpenRouter recorded for a generation (also a cancelled one).

        ``None`` when it is not (yet) known: OpenRouter records a generation a moment
        after it ends, so callers off the hot path may ask again later.
        """
        try:
            response = await self._client.get(
                f"{self._base_url}/generation",
                params={"id": generation_id},
                headers=self._headers,
                timeout=self._timeout,
            )
        except httpx.HTTPError as exc:
            raise request_error(exc) from exc
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise status_error(response)
        data = json_object(response.content).get("data")
        if not isinstance(data, dict):
            return None
        prompt = data.get("native_tokens_prompt", data.get("tokens_prompt"))
        completion = data.get("native_tokens_completion", data.get("tokens_completion"))
        if prompt is None and completion is None:
            return None
        return Usage(prompt_tokens=int(prompt or 0), completion_tokens=int(completion or 0))

    async def _fetch_models(self) -> dict[str, int]:
        try:
            response = await self._client.get(
                f"{self._base_url}/models", headers=self._headers, timeout=self._timeout
            )
        except httpx.HTTPError as exc:
            raise request_error(exc) from exc
        if response.status_code != 200:
            raise status_error(response)
        lengths: dict[str, int] = {}
        tool_capable: set[str] = set()
        choice_capable: set[str] = set()
        prices: dict[str, Price] = {}
        for model in json_object(response.content).get("data") or []:
            if not isinstance(model, dict):
                continue
            if (price := _price_of(model.get("pricing"))) is not None:
                prices[str(model["id"])] = price
            if isinstance(model.get("context_length"), int):
                lengths[str(model["id"])] = model["context_length"]
            parameters = model.get("supported_parameters") or []
            if "tools" in parameters:
                tool_capable.add(str(model["id"]))
            if "tool_choice" in parameters:
                choice_capable.add(str(model["id"]))
        self._tool_capable, self._tool_choice_capable = tool_capable, choice_capable
        self._prices = prices
        return lengths

    def warm(self) -> None:
        """Start fetching the model catalogue, so that no question waits for it."""
        self.catalog.warm()

    async def aclose(self) -> None:
        """The httpx client belongs to the lifespan, which closes it."""
        await self.catalog.aclose()


class _Clock:
    """A stream's content deadlines: the first token's, then the idle gap's, never past
    the total's (event-loop time)."""

    __slots__ = ("deadline", "started", "total_at")

    def __init__(self, started: float, deadline: float, total_at: float) -> None:
        self.started = started
        self.deadline = deadline
        self.total_at = total_at

    @classmethod
    def start(cls, first_token_s: float, total_s: float) -> _Clock:
        started = asyncio.get_running_loop().time()
        total_at = started + total_s
        return cls(started, min(started + first_token_s, total_at), total_at)

    @property
    def first_wait(self) -> float:
        return self.deadline - self.started

    def content_arrived(self, idle_s: float) -> float:
        """Content came: the next deadline, one idle gap from now."""
        self.deadline = min(asyncio.get_running_loop().time() + idle_s, self.total_at)
        return self.deadline


async def _read(batches: AsyncGenerator[list[str], None], deadline: MovingDeadline) -> list[str]:
    """The next batch, the read timed by the content deadline."""
    deadline.read_started()
    try:
        batch = await anext(batches)
    except BaseException as exc:
        deadline.read_finished(exc)
        raise
    deadline.read_finished()
    return batch


def _take(batch: list[str], state: _StreamState) -> tuple[list[str], bool, bool]:
    """Feed one read's events to ``state``: their texts, whether any carried content,
    and whether ``[DONE]`` came. Stops at an error chunk (``state.error``)."""
    texts: list[str] = []
    content = False
    for data in batch:
        if data == "[DONE]":
            return texts, content, True
        if text := state.feed(data):
            texts.append(text)
        content = content or state.content_at_last_feed
        if state.error is not None:
            break
    return texts, content, False


def _trace_generation(request: ChatRequest, state: _StreamState, known_id: str | None) -> None:
    if request.trace is not None and state.generation_id and state.generation_id != known_id:
        request.trace["generation_id"] = state.generation_id


class _StreamState:
    """What one stream has said so far; fed one SSE event at a time."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.generation_id: str | None = None
        self.text_seen = False
        self.content_at_last_feed = False
        self.finish_reason: FinishReason | None = None
        self.done_ok = False
        self.usage: Usage | None = None
        self.error: ParleyError | None = None
        self._calls: dict[int, dict[str, str]] = {}
        self._shape = TextChunkShape()

    def feed(self, data: str) -> str:
        """The text in one SSE event's ``data`` (empty if none); notes everything else."""
        text = self._shape.text(data)
        if text is not None:
            # The previous plain text chunk with other text (llm/openrouter_chunks.py).
            self.content_at_last_feed = bool(text)
            if text:
                self.text_seen = True
            return text
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            log.debug("ignoring a non-JSON SSE event from OpenRouter")
            self.content_at_last_feed = False
            return ""
        if not isinstance(chunk, dict):
            self.content_at_last_feed = False
            return ""
        # Nearly every chunk is one choice carrying text and nothing else: at tens of
        # thousands a second, the general path below was a third of the relay's cost.
        choices = chunk.get("choices")
        if (
            self.generation_id is not None
            and choices
            and len(choices) == 1
            and chunk.get("usage") is None
            and chunk.get("error") is None
        ):
            choice = choices[0]
            delta = choice.get("delta")
            if delta and choice.get("finish_reason") is None and not delta.get("tool_calls"):
                text = delta.get("content")
                self.content_at_last_feed = bool(text)
                if text and isinstance(text, str):
                    self._shape.learn(data, chunk, text)
                if text:
                    self.text_seen = True
                    return text
                return ""
        self.content_at_last_feed = False
        if self.generation_id is None and isinstance(chunk.get("id"), str):
            self.generation_id = chunk["id"]
        if isinstance(chunk.get("usage"), dict):
            usage = chunk["usage"]
            self.usage = Usage(
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
            )
        if isinstance(chunk.get("error"), dict):
            self.error = body_error(chunk["error"], mid_stream=True)
            return ""
        texts: list[str] = []
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                self.text_seen = self.content_at_last_feed = True
                texts.append(text)
            for call in delta.get("tool_calls") or []:
                self.content_at_last_feed = True
                self._merge_call(call)
            reason = choice.get("finish_reason")
            if reason == "error":
                self.error = UpstreamUnavailable("the model failed while answering")
            elif reason:
                self.finish_reason = _FINISH_REASONS.get(reason, "stop")
                self.done_ok = True
        return "".join(texts)

    def _merge_call(self, call: dict[str, Any]) -> None:
        # Tool calls stream in pieces keyed by index: id and name first, then
        # fragments of the JSON arguments.
        slot = self._calls.setdefault(int(call.get("index", 0)), {"id": "", "name": "", "a": ""})
        function = call.get("function") or {}
        slot["id"] = call.get("id") or slot["id"]
        slot["name"] = function.get("name") or slot["name"]
        slot["a"] += function.get("arguments") or ""

    def tool_calls(self) -> list[ToolCall]:
        calls = [
            ToolCall(id=slot["id"], name=slot["name"], arguments_json=slot["a"] or "{}")
            for _, slot in sorted(self._calls.items())
        ]
        if calls:
            self.text_seen = True
        return calls

    def finished(self, reason: FinishReason, error: ParleyError | None) -> StreamFinished:
        return StreamFinished(
            finish_reason=reason,
            model=self.model,
            usage=self.usage,
            generation_id=self.generation_id,
            error=error,
        )


async def _event_batches(response: httpx.Response) -> AsyncGenerator[list[str], None]:
    """The ``data`` of the events in each piece of the body as it arrives, in order
    (``llm/sse_batch.py``: one pass per piece, each event read as httpx-sse reads it;
    comments are dropped there)."""
    events = EventSplitter()
    async for text in response.aiter_text():
        batch = events.decode(text)
        if batch:
            yield batch
    tail = events.flush()
    if tail:
        yield tail


async def _read_to_the_end(batches: AsyncGenerator[list[str], None]) -> None:
    """Reads what follows ``[DONE]``: the end of the body, normally already here.

    A response closed before its body ended takes its connection down with it, and the
    next answer would wait for a new connection (and, to OpenRouter, a TLS handshake).
    """
    with contextlib.suppress(TimeoutError, httpx.HTTPError):
        async with asyncio.timeout(END_OF_BODY_WAIT_S):
            async for _ in batches:
                pass


def _is_event_stream(response: httpx.Response) -> bool:
    content_type = response.headers.get("content-type", "")
    return "text/event-stream" in content_type.partition(";")[0]


def _sent_hook(on_sent: Callable[[], None] | None) -> dict[str, Any]:
    """httpcore's ``trace`` extension, telling ``on_sent`` when the request's body is
    written (httpx itself yields to the event loop several times before that)."""
    if on_sent is None:
        return {}

    async def trace(event: str, _info: dict[str, Any]) -> None:
        if event.endswith(".send_request_body.complete"):
            on_sent()

    return {"trace": trace}


def _body(request: ChatRequest, *, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": request.model, "messages": request.messages}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    optional = {
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "tools": request.tools,
        "tool_choice": request.tool_choice,
        "response_format": request.response_format,
        "user": request.user,
    }
    body.update({key: value for key, value in optional.items() if value is not None})
    return body


def _usage_of(value: object) -> Usage | None:
    if not isinstance(value, dict):
        return None
    try:
        return Usage(
            prompt_tokens=int(value.get("prompt_tokens") or 0),
            completion_tokens=int(value.get("completion_tokens") or 0),
        )
    except (TypeError, ValueError):
        return None


def _price_of(pricing: object) -> Price | None:
    """OpenRouter lists prices as decimal strings of dollars per token."""
    if not isinstance(pricing, dict):
        return None
    try:
        return Price(float(pricing.get("prompt") or 0), float(pricing.get("completion") or 0))
    except (TypeError, ValueError):
        return None
