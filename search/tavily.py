"""Client for Tavily's search API (``POST {base}/search``).

Tavily answers ``{"query", "answer", "results": [{title, url, content, score,
raw_content}], "response_time", …}`` and fails with ``{"detail": {"error": "…"}}`` and
one of: 400 (bad parameters), 401 (missing or invalid key), 429 (too many requests,
with ``Retry-After``), 432 (plan limit), 433 (pay-as-you-go limit), 5xx.

Failures leave this module as ``errors``:

- an empty query, or Tavily's own 400: ``BadRequest``;
- everything else (401, 429, 432/433, 5xx, timeouts, connection errors, an open
  circuit): ``Unavailable``, whose ``details["reason"]`` says which, and whose
  ``retry_after`` is Tavily's ``Retry-After`` on a 429 or the time left before an open
  circuit lets a trial call through.

A search costs an answer at most ``deadline_s`` (3 s by default): every attempt and
the backoff between them share it, each attempt also bounded by ``timeout_s``; then
the answer goes on without results. Only transient failures (5xx, timeouts, transport
errors) are retried. A 200 that is not the JSON object Tavily documents, or a body over
``max_body_bytes`` (read as it streams in, and dropped at the limit), is not retried
either: asking again would bring the same. Transient failures and broken bodies count
against the circuit breaker; a 4xx will not go away by asking again, and a rate limit
or an exhausted plan says nothing about whether Tavily is up.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import orjson
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from errors import BadRequest, Unavailable
from llm.breaker import Clock, UpstreamBreaker
from llm.provider import UpstreamUnavailable

Depth = Literal["basic", "advanced"]
MAX_QUERY_CHARS = 400  # Tavily rejects longer queries with a 400


@dataclass(frozen=True, slots=True)
class SearchResult:
    title: str
    url: str
    content: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "url": self.url, "content": self.content, "score": self.score}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SearchResult:
        return cls(
            title=str(raw.get("title") or ""),
            url=str(raw.get("url") or ""),
            content=str(raw.get("content") or ""),
            score=float(raw.get("score") or 0.0),
        )


class _Transient(Exception):
    """Tavily is failing: 5xx, timeout or transport error (``retryable``), or an answer
    that cannot be used (invalid JSON, too large: not retryable)."""

    def __init__(self, reason: str, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retryable = retryable


class _TooLarge(Exception):
    pass


class TavilyClient:
    """One Tavily account, shared by every session of this process.

    Its circuit breaker is the one the model provider uses (``llm.breaker``): while
    the circuit is open, calls fail at once without touching the network; after the
    reset timeout one call is the trial and the others fail fast until it answers
    (a search is an extra for a turn, not worth waiting for).
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        api_key: str,
        *,
        timeout_s: float = 10.0,
        deadline_s: float = 3.0,
        max_body_bytes: int = 1024 * 1024,
        max_retries: int = 2,
        backoff_s: float = 0.25,
        breaker_fail_max: int = 5,
        breaker_reset_s: float = 30.0,
        clock: Clock = time.monotonic,
    ) -> None:
        self._client = client
        self._url = base_url.rstrip("/") + "/search"
        self._api_key = api_key
        self._timeout = httpx.Timeout(timeout_s)
        self._deadline_s = deadline_s
        self._max_body_bytes = max_body_bytes
        self._max_retries = max_retries
        self._backoff_s = backoff_s
        self._breaker = UpstreamBreaker("tavily", breaker_fail_max, breaker_reset_s, clock=clock)

    @property
    def breaker_state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"`` (pybreaker's names)."""
        return self._breaker.state

    async def search(
        self, query: str, *, max_results: int = 5, depth: Depth = "basic"
    ) -> list[SearchResult]:
        query = " ".join(query.split())
        if not query:
            raise BadRequest("search query is empty")
        query = query[:MAX_QUERY_CHARS]
        trial = await self._admit()
        body = {
            "query": query,
            "search_depth": depth,
            "topic": "general",
            "max_results": max_results,
            "include_answer": False,
            "include_raw_content": False,
            "include_images": False,
        }
        try:
            try:
                async with asyncio.timeout(self._deadline_s):
                    payload = await self._post_with_retries(body)
            except TimeoutError as exc:
                raise _Transient(
                    "timeout", f"Tavily did not answer within {self._deadline_s:g} s"
                ) from exc
        except _Transient as exc:
            self._breaker.record_failure(exc)
            raise Unavailable(
                f"web search is unavailable: {exc.message}",
                details={"upstream": "tavily", "reason": exc.reason},
            ) from exc
        except BaseException:
            # A 4xx or a cancellation says nothing about Tavily's health.
            self._breaker.release(trial)
            raise
        self._breaker.record_success()
        return _parse_results(payload)

    async def _admit(self) -> object | None:
        try:
            return await self._breaker.admit()
        except UpstreamUnavailable as exc:
            raise Unavailable(
                "web search is unavailable: circuit open",
                details={"upstream": "tavily", "reason": "circuit_open"},
                retry_after=exc.retry_after,
            ) from exc

    async def _post_with_retries(self, body: dict[str, Any]) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self._deadline_s
        attempts = stop_after_attempt(self._max_retries + 1)

        def stop(state: RetryCallState) -> bool:
            # A retry that could only start after the deadline is not made: the last
            # real failure says more than "timed out".
            return bool(attempts(state)) or loop.time() + state.upcoming_sleep >= give_up_at

        retrying = AsyncRetrying(
            retry=retry_if_exception(lambda exc: isinstance(exc, _Transient) and exc.retryable),
            stop=stop,
            wait=wait_exponential(multiplier=self._backoff_s, max=4.0)
            + wait_random(0, self._backoff_s),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._post(body)
        raise AssertionError("unreachable: tenacity reraises the last failure")

    async def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        headers = {
            "Authorization": f"Bearer {self._api_key}",
            "Content-Type": "application/json",
        }
        try:
            request = self._client.stream(
                "POST",
                self._url,
                content=orjson.dumps(body),
                headers=headers,
                timeout=self._timeout,
            )
            async with request as response:
                content = await _read_body(response, self._max_body_bytes)
        except _TooLarge as exc:
            raise _Transient(
                "too_large",
                f"Tavily's answer is over {self._max_body_bytes} bytes",
                retryable=False,
            ) from exc
        except httpx.TimeoutException as exc:
            raise _Transient("timeout", "Tavily timed out") from exc
        except httpx.TransportError as exc:
            raise _Transient("down", f"cannot reach Tavily ({type(exc).__name__})") from exc
        status = response.status_code
        if status == 200:
            try:
                payload = orjson.loads(content)
            except orjson.JSONDecodeError as exc:
                raise _Transient(
                    "invalid_response", "Tavily answered with invalid JSON", retryable=False
                ) from exc
            if not isinstance(payload, dict):
                raise _Transient(
                    "invalid_response", "Tavily answered with an unexpected body", retryable=False
                )
            return payload
        if status >= 500:
            raise _Transient("down", f"Tavily answered {status}")
        raise _client_error(response, content)


async def _read_body(response: httpx.Response, limit: int) -> bytes:
    """The body, read as it arrives; ``_TooLarge`` as soon as it passes ``limit`` (or
    its Content-Length says it will), without reading the rest."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _detail(content: bytes) -> str:
    try:
        body = orjson.loads(content)
        detail = body.get("detail")
        if isinstance(detail, dict):
            return str(detail.get("error") or "")
        return str(detail or "")
    except (orjson.JSONDecodeError, AttributeError):
        return ""


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare enough that the caller's default will do


def _client_error(response: httpx.Response, content: bytes) -> Exception:
    status, detail = response.status_code, _detail(content)
    suffix = f": {detail}" if detail else ""
    if status == 400:
        return BadRequest(f"web search rejected the query{suffix}")
    reason = {
        401: "unauthorized",
        403: "forbidden",
        429: "rate_limited",
        432: "out_of_credit",
        433: "out_of_credit",
    }.get(status, "rejected")
    return Unavailable(
        f"web search is unavailable ({status}){suffix}",
        details={"upstream": "tavily", "reason": reason, "status": status},
        retry_after=_retry_after(response) if status == 429 else None,
    )


def _parse_results(payload: dict[str, Any]) -> list[SearchResult]:
    results = payload.get("results")
    if not isinstance(results, list):
        return []
    return [
        SearchResult.from_dict(item)
        for item in results
        if isinstance(item, dict) and item.get("url") and item.get("content")
    ]
