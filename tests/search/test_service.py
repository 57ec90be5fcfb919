from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date

import httpx
import pytest

from llm.tokens import count_text
from search.cache import MemorySearchCache, cache_key, normalise_query
from search.service import (
    WEB_SEARCH_TOOL,
    WebSearch,
    format_results,
    normalise_url,
    rank_results,
    should_search,
)
from search.tavily import SearchResult, TavilyClient
from tests.fakes.tavily import API_KEY, FakeTavily


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def web_search(http: httpx.AsyncClient, fake: FakeTavily, cache: MemorySearchCache) -> WebSearch:
    client = TavilyClient(http, fake.base_url, API_KEY, timeout_s=2, max_retries=0, backoff_s=0)
    return WebSearch(client, cache, ttl_s=60)


async def test_the_second_identical_normalised_query_is_served_from_the_cache(
    http: httpx.AsyncClient, fake_tavily: FakeTavily
) -> None:
    search = web_search(http, fake_tavily, MemorySearchCache())

    first = await search.run("Latest Python release?")
    second = await search.run("  latest   PYTHON release ")

    assert first.ok and not first.cached
    assert second.ok and second.cached
    assert second.results == first.results
    assert len(fake_tavily.requests) == 1


async def test_an_outage_is_an_unavailable_outcome_not_an_exception(
    http: httpx.AsyncClient, fake_tavily: FakeTavily
) -> None:
    fake_tavily.mode = "down"

    outcome = await web_search(http, fake_tavily, MemorySearchCache()).run("anything")

    assert outcome.reason == "unavailable"
    assert outcome.results == []
    assert "unavailable" in (outcome.note() or "")


async def test_a_rate_limit_is_a_rate_limited_outcome_with_retry_after(
    http: httpx.AsyncClient, fake_tavily: FakeTavily
) -> None:
    fake_tavily.mode = "rate_limited"

    outcome = await web_search(http, fake_tavily, MemorySearchCache()).run("anything")

    assert (outcome.reason, outcome.retry_after) == ("rate limited", 7)


async def test_failures_are_not_cached(http: httpx.AsyncClient, fake_tavily: FakeTavily) -> None:
    fake_tavily.mode, fake_tavily.fail_times = "down", 1
    search = web_search(http, fake_tavily, MemorySearchCache())

    assert (await search.run("flaky")).reason == "unavailable"
    assert (await search.run("flaky")).ok


async def test_without_a_client_search_is_not_configured() -> None:
    outcome = await WebSearch(None, MemorySearchCache()).run("news today")
    assert outcome.reason == "not configured"


async def test_results_are_deduplicated_by_url_and_ranked_by_score(
    http: httpx.AsyncClient, fake_tavily: FakeTavily
) -> None:
    fake_tavily.results = [
        {"title": "Low", "url": "https://a.example/x", "content": "low", "score": 0.2},
        {"title": "Dup", "url": "https://WWW.a.example/x/#top", "content": "dup", "score": 0.5},
        {"title": "High", "url": "https://b.example/", "content": "high", "score": 0.9},
    ]

    outcome = await web_search(http, fake_tavily, MemorySearchCache()).run("dedupe")

    assert [r.title for r in outcome.results] == ["High", "Dup"]


def test_urls_normalise_case_www_fragment_tracking_and_trailing_slash() -> None:
    assert normalise_url("HTTPS://www.Example.org/a/?utm_source=x&id=3#frag") == (
        "https://example.org/a?id=3"
    )


def test_long_result_content_is_trimmed_to_its_token_budget() -> None:
    long = SearchResult("T", "https://x.example", "word " * 2000, 1.0)
    [trimmed] = rank_results([long], result_tokens=50, limit=5)
    assert count_text(trimmed.content) <= 50


def test_query_normalisation_and_keys() -> None:
    assert normalise_query('  "What\'s  NEW in Python?" ') == "what's new in python"
    assert cache_key("a b", depth="basic") == cache_key(" A  B!", depth="basic")
    assert cache_key("a b", depth="basic") != cache_key("a b", depth="advanced")


def test_formatted_results_are_numbered_with_title_and_url_within_budget() -> None:
    results = [
        SearchResult(f"Title {n}", f"https://x.example/{n}", "text " * 150, 1 - n / 10)
        for n in range(1, 6)
    ]

    text = format_results(results, budget_tokens=400)

    assert text.startswith("Web search results")
    assert "[1] Title 1\nURL: https://x.example/1" in text
    assert "[2] Title 2" in text
    assert count_text(text) <= 400
    assert format_results(results, budget_tokens=5) == ""


@pytest.mark.parametrize(
    "text",
    [
        "Can you search for the Parley changelog?",
        "look it up please",
        "What's the latest on the Mars mission?",
        "any news about rust 2.0",
        "what's the weather in Oslo today",
        "price of bitcoin",
        "Who won the match last night?",
        "what happens in 2031?",
    ],
)
def test_messages_with_explicit_cues_trigger_a_search(text: str) -> None:
    assert should_search(text, today=date(2030, 5, 1))


@pytest.mark.parametrize(
    "text",
    [
        "Explain a binary search tree",
        "Write a haiku about autumn",
        "What did Kant argue in 1781?",
        "refactor this function for me",
    ],
)
def test_messages_without_cues_do_not(text: str) -> None:
    assert not should_search(text, today=date(2030, 5, 1))


def test_the_tool_definition_is_an_openai_function_with_a_query() -> None:
    function = WEB_SEARCH_TOOL["function"]
    assert WEB_SEARCH_TOOL["type"] == "function"
    assert function["name"] == "web_search"
    assert function["parameters"]["required"] == ["query"]
