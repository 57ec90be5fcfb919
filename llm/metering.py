"""Metering: every request sent to a model is admitted against a budget, then counted.

``MeteredProvider`` wraps one upstream provider *inside* ``ResilientProvider``, so each
attempt is seen: answers, their retries and fallbacks, summaries, memory extraction,
search-tool rounds and re-asked answers. Before the request leaves, the ``Meter`` may
refuse it (``errors.BudgetExceeded``) or lower its ``max_tokens`` to what is left; after
it ends, the upstream's own usage (OpenRouter's final usage chunk, or the ``usage`` of a
whole reply) is recorded at the catalogue's prices, or Parley's token estimate when the
upstream reported none (cancelled, broken).

Who pays is ambient: the task that answers a question sets ``paid_by(Payer(...))`` and
everything it starts inherits it (asyncio copies the context into new tasks). Why a
request is made travels on the request itself (``ChatRequest.purpose``).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any, Protocol

from llm.provider import (
    ChatEvent,
    ChatProvider,
    ChatRequest,
    StreamFinished,
    TextDelta,
    ToolCall,
    Usage,
)
from llm.tokens import count_messages, count_text

# Why a request was sent to a model.
KINDS = ("answer", "reask", "retry", "fallback", "summary", "memory", "search_round")


@dataclass(frozen=True)
class Payer:
    user_id: uuid.UUID | None
    session_id: uuid.UUID | None = None


_payer: ContextVar[Payer | None] = ContextVar("parley_payer", default=None)


@contextlib.contextmanager
def paid_by(payer: Payer | None) -> Iterator[None]:
    token = _payer.set(payer)
    try:
        yield
    finally:
        _payer.reset(token)


def current_payer() -> Payer | None:
    return _payer.get()


@dataclass(frozen=True)
class Price:
    """US dollars per token, as OpenRouter's catalogue lists them."""

    prompt_usd: float
    completion_usd: float

    def nano_usd(self, usage: Usage) -> int:
        cost = self.prompt_usd * usage.prompt_tokens + self.completion_usd * usage.completion_tokens
        return round(cost * 1e9)


@dataclass(frozen=True)
class Spend:
    payer: Payer | None
    kind: str
    model: str
    usage: Usage
    nano_usd: int
    estimated: bool


class Meter(Protocol):
    async def admit(
        self,
        payer: Payer | None,
        prompt_tokens: Callable[[], int],
        max_tokens: int | None,
        price: Price | None,
    ) -> int | None:
        """The ``max_tokens`` to ask for (lowered to what the budget leaves), or raise
        ``BudgetExceeded``. ``prompt_tokens`` is called only when a budget applies."""
        ...

    def record(self, spend: Spend) -> None:
        """Count one request's spend (without waiting for storage)."""
        ...


PriceLookup = Callable[[str], Awaitable[Price | None]]


class MeteredProvider:
    """A ``ChatProvider`` that admits and counts every request of the one it wraps."""

    def __init__(self, inner: ChatProvider, meter: Meter) -> None:
        self._inner = inner
        self._meter = meter
        self.name = inner.name

    def __getattr__(self, name: str) -> Any:
        # What else the upstream offers (supports_tools, generation_usage, warm, catalog).
        return getattr(self._inner, name)

    async def _price(self, model: str) -> Price | None:
        lookup = getattr(self._inner, "price", None)
        if lookup is None:
            return None
        try:
            return await lookup(model)  # type: ignore[no-any-return]
        except Exception:
            return None  # no price known: tokens still count

    async def _admit(self, request: ChatRequest) -> tuple[ChatRequest, Payer | None, Price | None]:
        payer = current_payer()
        price = await self._price(request.model)
        max_tokens = await self._meter.admit(
            payer, lambda: count_messages(request.messages), request.max_tokens, price
        )
        if max_tokens != request.max_tokens:
            request = replace(request, max_tokens=max_tokens)
        return request, payer, price

    def _record(
        self,
        request: ChatRequest,
        payer: Payer | None,
        price: Price | None,
        usage: Usage | None,
        produced: str | None,
    ) -> None:
        """``produced`` is None when the upstream failed before anything came back:
        no generation ran upstream, so nothing was billed (the call still counts)."""
        estimated = usage is None and produced is not None
        if usage is None:
            usage = (
                Usage(count_messages(request.messages), count_text(produced))
                if produced is not None
                else Usage(0, 0)
            )
        self._meter.record(
            Spend(
                payer=payer,
                kind=request.purpose or "answer",
                model=request.model,
                usage=usage,
                nano_usd=price.nano_usd(usage) if price is not None else 0,
                estimated=estimated,
            )
        )

    async def stream(self, request: ChatRequest) -> AsyncGenerator[ChatEvent, None]:
        request, payer, price = await self._admit(request)
        parts: list[str] = []
        usage: Usage | None = None
        started = False
        try:
            async for event in self._inner.stream(request):
                started = True
                if isinstance(event, TextDelta):
                    parts.append(event.text)
                elif isinstance(event, ToolCall):
                    parts.append(event.name + event.arguments_json)
                elif isinstance(event, StreamFinished):
                    usage = event.usage
                yield event
        finally:
            self._record(request, payer, price, usage, "".join(parts) if started else None)

    async def complete(self, request: ChatRequest) -> str:
        request, payer, price = await self._admit(request)
        trace: dict[str, Any] = request.trace if request.trace is not None else {}
        trace.pop("usage", None)
        if request.trace is None:
            request = replace(request, trace=trace)
        text: str | None = None
        try:
            text = await self._inner.complete(request)
            return text
        finally:
            reported = trace.get("usage")
            self._record(
                request, payer, price, reported if isinstance(reported, Usage) else None, text
            )

    async def context_length(self, model: str) -> int | None:
        return await self._inner.context_length(model)

    async def aclose(self) -> None:
        await self._inner.aclose()
