"""Web search for a turn: when to search, the search itself, and how results read.

``WebSearch.run`` never raises for an upstream problem: a generation must go on
without search, so a missing key, an outage, a rate limit or a rejected query come
back as a ``SearchOutcome`` with a ``reason`` that the context builder turns into a
note for the model ("web search was unavailable…").

When to search (``should_search``) is a deliberately plain rule for models without
tool calling; models with tool calling get ``WEB_SEARCH_TOOL`` and decide themselves.
A client can always force a search with ``"search": true`` on its message frame.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

from errors import BadRequest, ParleyError, Unavailable
from llm.tokens import count_text, truncate_text
from search.cache import SearchCache, cache_key
from search.tavily import Depth, SearchResult, TavilyClient

log = logging.getLogger(__name__)

Reason = Literal["not configured", "unavailable", "rate limited", "rejected", "empty query"]

WEB_SEARCH_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "web_search",
        "description": (
            "Search the web for current or specific information that you do not know "
            "or that may have changed (news, prices, results, releases, anything dated). "
            "Returns numbered results with title, URL and an excerpt; cite them as [n]."
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "query": {
                    "type": "string",
                    "description": "A short, specific web search query.",
                }
            },
            "required": ["query"],
            "additionalProperties": False,
        },
    },
}

# The rule for models without tool calling: search when the message carries an
# explicit cue, matched as whole words, case-insensitively:
#   1. it asks for a search: "search", "google", "look up", "browse", "on the web";
#   2. it asks about now: "latest", "news", "today", "tonight", "yesterday",
#      "current(ly)", "right now", "recent(ly)", "this week/month/year", "up to date";
#   3. it asks for a live figure or outcome: "price of", "stock price", "exchange rate",
#      "weather", "forecast", "score", "who won", "who is winning", "results of";
#   4. it names a year that is this year or later.
# "binary search" is excluded from 1. Anything else is answered from the model's own
# knowledge, the user's documents and the conversation.
_CUES = re.compile(
    r"""\b(?:
        (?<!binary\ )search(?:ing)?|google|look(?:ing)?\ (?:it\ |this\ |that\ )?up|lookup|browse
        |on\ the\ (?:web|internet)|online
        |latest|news|today|tonight|yesterday|current(?:ly)?|right\ now|recent(?:ly)?
        |this\ (?:week|month|year)|up[-\ ]to[-\ ]date
        |price\ of|stock\ price|exchange\ rate|weather|forecast|scores?
        |who\ won|who\ is\ winning|who's\ winning|results?\ of
    )\b""",
    re.IGNORECASE | re.VERBOSE,
)
_YEAR = re.compile(r"\b(19\d{2}|2\d{3})\b")


def should_search(text: str, *, today: date | None = None) -> bool:
    """Whether a message without tool calling should trigger a web search (rule above)."""
    if _CUES.search(text):
        return True
    this_year = (today or date.today()).year
    return any(int(year) >= this_year for year in _YEAR.findall(text))


@dataclass(frozen=True, slots=True)
class SearchOutcome:
    query: str
    results: list[SearchResult] = field(default_factory=list)
    reason: Reason | None = None
    cached: bool = False
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None

    def note(self) -> str | None:
        """A line for the model when search was wanted but gave nothing usable."""
        if self.reason is None:
            return None if self.results else "A web search found nothing relevant."
        return (
            f"A web search was attempted but is {self.reason} right now; answer from "
            "what you know and say that you could not check the web."
        )


def normalise_url(url: str) -> str:
    """The URL without case in scheme and host, ``www.``, fragment, tracking or a final /."""
    parts = urlsplit(url.strip())
    host = parts.netloc.lower().removeprefix("www.")
    query = urlencode(
        [(k, v) for k, v in parse_qsl(parts.query) if not k.lower().startswith("utm_")]
    )
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme.lower(), host, path, query, ""))


def rank_results(
    results: list[SearchResult], *, result_tokens: int, limit: int
) -> list[SearchResult]:
    """Best score first, one per normalised URL, each content trimmed to a token budget."""
    best: dict[str, SearchResult] = {}
    for result in results:
        key = normalise_url(result.url)
        if key not in best or result.score > best[key].score:
            best[key] = result
    ranked = sorted(best.values(), key=lambda r: r.score, reverse=True)[:limit]
    return [
        SearchResult(
            r.title.strip(), r.url, truncate_text(r.content.strip(), result_tokens), r.score
        )
        for r in ranked
    ]


def format_results(results: list[SearchResult], budget_tokens: int) -> str:
    """Numbered results (title, URL, excerpt) that fit in ``budget_tokens``.

    A result is dropped whole rather than left as a title without text, except that
    the last one that fits may lose the end of its excerpt.
    """
    header = "Web search results (cite as [n]):"
    blocks: list[str] = []
    used = count_text(header)
    for n, result in enumerate(results, start=1):
        head = f"\n\n[{n}] {result.title or result.url}\nURL: {result.url}\n"
        block = head + result.content
        cost = count_text(block)
        if used + cost <= budget_tokens:
            blocks.append(block)
            used += cost
            continue
        room = budget_tokens - used - count_text(head)
        if room >= 24:
            content = truncate_text(result.content, room - 2) + "…"
            block = head + content
            if used + count_text(block) <= budget_tokens:
                blocks.append(block)
        break
    if not blocks:
        return ""
    return header + "".join(blocks)


class WebSearch:
    """Search with a cache in front; the one object the generation runner talks to."""

    def __init__(
        self,
        client: TavilyClient | None,
        cache: SearchCache | None,
        *,
        ttl_s: int = 3600,
        max_results: int = 5,
        depth: Depth = "basic",
        result_tokens: int = 300,
    ) -> None:
        self._client = client
        self._cache = cache
        self._ttl_s = ttl_s
        self._max_results = max_results
        self._depth: Depth = depth
        self._result_tokens = result_tokens

    @property
    def configured(self) -> bool:
        return self._client is not None

    async def run(self, query: str) -> SearchOutcome:
        query = " ".join(query.split())
        if not query:
            return SearchOutcome(query, reason="empty query")
        if self._client is None:
            return SearchOutcome(query, reason="not configured")
        key = cache_key(query, max_results=self._max_results, depth=self._depth)
        cached = await self._cache_get(key)
        if cached is not None:
            return SearchOutcome(query, cached, cached=True)
        try:
            raw = await self._client.search(query, max_results=self._max_results, depth=self._depth)
        except BadRequest as exc:
            log.info("web search rejected the query: %s", exc.message)
            return SearchOutcome(query, reason="rejected")
        except Unavailable as exc:
            details = exc.details if isinstance(exc.details, dict) else {}
            limited = details.get("reason") == "rate_limited"
            log.warning("web search unavailable: %s", exc.message)
            return SearchOutcome(
                query,
                reason="rate limited" if limited else "unavailable",
                retry_after=exc.retry_after,
            )
        results = rank_results(raw, result_tokens=self._result_tokens, limit=self._max_results)
        await self._cache_set(key, results)
        return SearchOutcome(query, results)

    async def _cache_get(self, key: str) -> list[SearchResult] | None:
        if self._cache is None:
            return None
        try:
            value = await self._cache.get(key)
            if value is None:
                return None
            return [SearchResult.from_dict(item) for item in orjson.loads(value)]
        except (ParleyError, orjson.JSONDecodeError, TypeError, AttributeError) as exc:
            # A broken cache costs a search call, never the answer.
            log.warning("search cache read failed: %s", exc)
            return None

    async def _cache_set(self, key: str, results: list[SearchResult]) -> None:
        if self._cache is None or not results:
            return
        try:
            await self._cache.set(key, orjson.dumps([r.to_dict() for r in results]), self._ttl_s)
        except ParleyError as exc:
            log.warning("search cache write failed: %s", exc)
