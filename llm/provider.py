"""The model-provider interface every generation goes through.

A ``ChatProvider`` turns a ``ChatRequest`` into a stream of events::

    TextDelta* ToolCall* StreamFinished

Contract shared by every implementation (OpenRouter, offline, the resilient wrapper):

- A failure *before* the first ``TextDelta``/``ToolCall`` is raised from the
  iterator as a ``errors`` class (``BadRequest`` or ``Unavailable``), so that
  the caller may retry or fall back: nothing has been shown to anyone yet.
- A failure *after* text has flowed is not raised: the stream ends with
  ``StreamFinished(finish_reason="error", error=...)`` so the partial reply is kept.
- Text that arrives together may come as one ``TextDelta``; text is never held back
  to wait for more.
- ``stream()`` returns an async generator; closing it (``aclose()``) or cancelling the
  task iterating it closes the upstream HTTP response at once, which is what stops
  the upstream model (and its billing).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from errors import BadRequest, ParleyError, Unavailable

FinishReason = Literal["stop", "length", "error", "cancelled"]


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: list[dict[str, Any]]
    max_tokens: int | None = None
    temperature: float | None = None
    tools: list[dict[str, Any]] | None = None
    # "none" keeps declared tools from being called (a history that holds tool calls
    # must still declare them).
    tool_choice: str | None = None
    response_format: dict[str, Any] | None = None
    user: str | None = None
    # Why this request is made, for the spend record (``llm.metering.KINDS``); None is
    # an answer.
    purpose: str | None = field(default=None, compare=False)
    # Filled by the provider as it learns things about the call (``generation_id``),
    # so that a caller that cancels the stream can still look its usage up later.
    trace: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    # Called once the request is on its way to the model (written to the upstream, or
    # the offline model started): its caller holds other work back until then.
    on_sent: Callable[[], None] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ToolCall:
    """A complete function call the model asked for (arguments are a JSON string)."""

    id: str
    name: str
    arguments_json: str


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class StreamFinished:
    finish_reason: FinishReason
    model: str
    usage: Usage | None
    generation_id: str | None
    error: ParleyError | None = None


ChatEvent = TextDelta | StreamFinished | ToolCall


@runtime_checkable
class ChatProvider(Protocol):
    name: str

    def stream(self, request: ChatRequest) -> AsyncGenerator[ChatEvent, None]:
        """An async generator of events; see the module docstring for the contract."""
        ...

    async def complete(self, request: ChatRequest) -> str:
        """The whole reply at once (summaries, memory extraction); raises on failure."""
        ...

    async def context_length(self, model: str) -> int | None: ...

    async def aclose(self) -> None: ...


class UpstreamUnavailable(Unavailable):
    """The model upstream failed; ``upstream_status`` is its HTTP status (None for
    transport failures and deadlines) and ``retryable`` says whether trying the same
    model again may help (408, 429, 5xx, timeouts, dropped connections)."""

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int | None = None,
        retryable: bool = True,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.upstream_status = upstream_status
        self.retryable = retryable


class NoFreeConnection(Unavailable):
    """Every upstream connection this node may open is busy with another answer
    (``UPSTREAM_MAX_CONNECTIONS``). Not the upstream's failure: no breaker counts it,
    and neither a retry nor a fallback model would find a free connection."""


class UpstreamBadRequest(BadRequest):
    """The upstream rejected the request itself (400): retrying cannot help."""

    def __init__(self, message: str, *, upstream_status: int | None = 400) -> None:
        super().__init__(message)
        self.upstream_status = upstream_status
        self.retryable = False


def is_retryable(exc: BaseException) -> bool:
    """Whether trying the same model again may succeed."""
    if isinstance(exc, NoFreeConnection):
        return False
    if isinstance(exc, UpstreamUnavailable):
        return exc.retryable
    return isinstance(exc, Unavailable)
