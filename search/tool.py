"""Web search as a tool the model may call, for models that support tool calling.

The request offers ``search.service.WEB_SEARCH_TOOL``. When the model answers with a
``ToolCall`` for ``web_search`` instead of (or after some) text, the search runs
(``stream.status`` ``searching``, with a detail when it was unavailable), the
model's call and the result go back as an ``assistant`` message with
``tool_calls`` and a ``tool`` message, and the generation continues. One round
only, so a model cannot loop on the tool and a turn costs at most two model calls:
the continued answer is asked with ``tool_choice: "none"``, so the model writes
its answer instead of calling again (calls it makes anyway are not run).

The result the model reads is ``format_results`` (numbered titles, URLs and
excerpts) or, when search failed or found nothing, the outcome's note, so the model
can say that it could not check the web. Usage of the two calls is added up.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any, Protocol

import orjson

from llm.provider import ChatEvent, ChatRequest, StreamFinished, ToolCall, Usage
from search.service import WEB_SEARCH_TOOL, SearchOutcome, format_results

log = logging.getLogger(__name__)

TOOL_NAME = str(WEB_SEARCH_TOOL["function"]["name"])
MAX_CALLS = 2  # searches run for one round; more calls are answered with a refusal
Status = Callable[[str, str | None], Awaitable[None]]


class FallbackStreaming(Protocol):
    """What ``llm.resilience.ResilientProvider`` offers: a stream over fallbacks."""

    def stream(
        self, request: ChatRequest, *, fallbacks: Sequence[str] | None = None
    ) -> AsyncGenerator[ChatEvent, None]: ...


class Searcher(Protocol):
    async def run(self, query: str) -> SearchOutcome: ...


def search_query(call: ToolCall, fallback: str) -> str:
    """The ``query`` argument of a call; the user's message when it is missing or bad."""
    try:
        arguments: Any = orjson.loads(call.arguments_json or "{}")
    except orjson.JSONDecodeError:
        return fallback
    query = arguments.get("query") if isinstance(arguments, dict) else None
    return query.strip() if isinstance(query, str) and query.strip() else fallback


def tool_result(outcome: SearchOutcome, budget_tokens: int) -> str:
    """What the model reads for one call: the results, or why there are none."""
    text = format_results(outcome.results, budget_tokens) if outcome.ok else ""
    return text or outcome.note() or "A web search found nothing relevant."


def unavailable_detail(outcome: SearchOutcome) -> str:
    return f"web search unavailable: {outcome.reason}"


async def stream_with_search(
    provider: FallbackStreaming,
    request: ChatRequest,
    *,
    fallbacks: Sequence[str] | None,
    searcher: Searcher,
    question: str,
    status: Status,
    budget_tokens: int,
) -> AsyncGenerator[ChatEvent, None]:
    """The model's events, with one round of ``web_search`` calls run in between.

    Text is passed on as it arrives; a ``StreamFinished`` is held back until it is
    known whether the answer continues after a search.
    """
    calls: list[ToolCall] = []
    first: StreamFinished | None = None
    stream = provider.stream(request, fallbacks=fallbacks)
    try:
        async for event in stream:
            if isinstance(event, ToolCall):
                calls.append(event)
            elif isinstance(event, StreamFinished):
                first = event
            else:
                yield event
    finally:
        # Closing the generator closes the upstream HTTP response.
        await stream.aclose()
    wanted = [call for call in calls if call.name == TOOL_NAME]
    if first is None or first.finish_reason == "error" or not wanted:
        if first is not None:
            yield first
        return

    await status("searching", None)
    results: list[dict[str, Any]] = []
    for n, call in enumerate(wanted):
        if n < MAX_CALLS:
            outcome = await searcher.run(search_query(call, question))
            if not outcome.ok:
                await status("searching", unavailable_detail(outcome))
            content = tool_result(outcome, budget_tokens // min(len(wanted), MAX_CALLS))
        else:
            content = "Not run: at most two searches per answer."
        results.append({"role": "tool", "tool_call_id": call.id, "content": content})
    await status("generating", None)
    asked = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_json},
            }
            for call in wanted
        ],
    }
    # The tools stay declared (providers reject a history holding tool calls without
    # them), but may not be called again.
    follow_up = replace(
        request,
        messages=[*request.messages, asked, *results],
        tool_choice="none",
        purpose="search_round",
    )
    stream = provider.stream(follow_up, fallbacks=fallbacks)
    try:
        async for event in stream:
            if isinstance(event, StreamFinished):
                yield replace(event, usage=_added(first.usage, event.usage))
                return
            if isinstance(event, ToolCall):
                log.warning("%s called %s again after tool_choice none", request.model, event.name)
            else:
                yield event
    finally:
        await stream.aclose()


def _added(a: Usage | None, b: Usage | None) -> Usage | None:
    if a is None or b is None:
        return b or a
    return Usage(a.prompt_tokens + b.prompt_tokens, a.completion_tokens + b.completion_tokens)
