"""What a search may cost an answer: one deadline over every attempt, no retry of an
answer that asking again would not change, a bounded body; against the loopback Tavily
over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from errors import Unavailable
from search.cache import MemorySearchCache
from search.service import WebSearch
from search.tavily import TavilyClient
from tests.fakes.tavily import API_KEY, FakeTavily

# Far beyond any deadline set here: a search must be over long before it.
NEVER_S = 8


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def make_client(http: httpx.AsyncClient, fake: FakeTavily, **options: float) -> TavilyClient:
    # The per-attempt timeout and the retries are the defaults (10 s, two retries).
    return TavilyClient(http, fake.base_url, API_KEY, backoff_s=0.0, **options)  # type: ignore[arg-type]


async def search(client: TavilyClient, query: str = "anything") -> None:
    async with asyncio.timeout(NEVER_S):
        await client.search(query)


@pytest.mark.parametrize("mode", ["hang", "slow"])
async def test_a_slow_tavily_costs_at_most_the_deadline_over_all_attempts(
    http: httpx.AsyncClient, fake_tavily: FakeTavily, mode: str
) -> None:
    fake_tavily.mode, fake_tavily.slow_s = mode, 5.0

    with pytest.raises(Unavailable) as caught:
        await search(make_client(http, fake_tavily, deadline_s=0.5))

    assert caught.value.details["reason"] == "timeout"
    assert "within 0.5 s" in caught.value.message
    assert len(fake_tavily.requests) == 1


async def test_invalid_json_is_not_retried(
    http: httpx.AsyncClient, fake_tavily: FakeTavily
) -> None:
    fake_tavily.mode = "invalid_json"

    with pytest.raises(Unavailable) as caught:
        await search(make_client(http, fake_tavily))

    assert caught.value.details["reason"] == "invalid_response"
    assert len(fake_tavily.requests) == 1


async def test_a_body_over_the_limit_is_refused_without_reading_it_all(
    http: httpx.AsyncClient, fake_tavily: FakeTavily
) -> None:
    fake_tavily.mode, fake_tavily.huge_bytes = "huge", 64 * 1024 * 1024

    with pytest.raises(Unavailable) as caught:
        await search(make_client(http, fake_tavily, max_body_bytes=1024 * 1024))

    assert caught.value.details["reason"] == "too_large"
    assert len(fake_tavily.requests) == 1
    assert fake_tavily.huge_sent < fake_tavily.huge_bytes // 2  # it stopped reading


async def test_a_body_under_the_limit_is_read(
    http: httpx.AsyncClient, fake_tavily: FakeTavily
) -> None:
    fake_tavily.mode, fake_tavily.huge_bytes = "huge", 200 * 1024

    async with asyncio.timeout(NEVER_S):
        results = await make_client(http, fake_tavily, max_body_bytes=1024 * 1024).search("x")

    assert len(results) > 100


@pytest.mark.parametrize("key", ["tvly-wrong"])
async def test_a_client_error_is_not_retried(
    http: httpx.AsyncClient, fake_tavily: FakeTavily, key: str
) -> None:
    client = TavilyClient(http, fake_tavily.base_url, key, backoff_s=0.0)
    with pytest.raises(Unavailable):
        await search(client)
    assert len(fake_tavily.requests) == 1


async def test_a_slow_search_lets_the_answer_go_on_without_results(
    http: httpx.AsyncClient, fake_tavily: FakeTavily
) -> None:
    fake_tavily.mode = "hang"
    web = WebSearch(make_client(http, fake_tavily, deadline_s=0.5), MemorySearchCache())

    async with asyncio.timeout(NEVER_S):
        outcome = await web.run("latest news")

    assert outcome.results == []
    assert outcome.reason == "unavailable"
    assert "answer from what you know" in (outcome.note() or "")


async def test_no_backoff_outlasts_the_deadline_and_the_last_failure_is_reported(
    http: httpx.AsyncClient, fake_tavily: FakeTavily
) -> None:
    fake_tavily.mode = "down"
    client = TavilyClient(http, fake_tavily.base_url, API_KEY, backoff_s=5.0, deadline_s=1.0)

    with pytest.raises(Unavailable) as caught:
        await search(client)

    assert caught.value.details["reason"] == "down"
    assert len(fake_tavily.requests) == 1
