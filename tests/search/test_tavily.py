from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from errors import BadRequest, Unavailable
from search.tavily import TavilyClient
from tests.fakes.tavily import API_KEY, FakeTavily


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def make_client(
    http: httpx.AsyncClient, fake: FakeTavily, *, key: str = API_KEY, **options: float
) -> TavilyClient:
    settings: dict[str, float] = {"timeout_s": 2.0, "max_retries": 2, "backoff_s": 0.0}
    settings.update(options)
    return TavilyClient(
        http,
        fake.base_url,
        key,
        timeout_s=settings["timeout_s"],
        max_retries=int(settings["max_retries"]),
        backoff_s=settings["backoff_s"],
        breaker_fail_max=int(settings.get("breaker_fail_max", 5)),
        breaker_reset_s=settings.get("breaker_reset_s", 30.0),
    )


async def test_search_posts_the_documented_request_and_parses_results(
    http: httpx.AsyncClient, fake_tavily: FakeTavily
) -> None:
    client = make_client(http, fake_tavily)

    results = await client.search("  parley   websockets ", max_results=2, depth="advanced")

    assert [r.url for r in results] == [
        "https://example.org/parley-websockets/1",
        "https://example.org/parley-websockets/2",
    ]
    assert results[0].title == "Result 1 about parley websockets"
    assert results[0].score == pytest.approx(0.8)
    request = fake_tavily.requests[0]
    assert (request.method, request.path) == ("POST", "/search")
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.headers["content-type"] == "application/json"
    assert request.body["query"] == "parley websockets"
    assert request.body["search_depth"] == "advanced"
    assert request.body["max_results"] == 2
    assert request.body["include_answer"] is False


async def test_an_empty_query_is_a_bad_request_without_a_call(
    http: httpx.AsyncClient, fake_tavily: FakeTavily
) -> None:
    with pytest.raises(BadRequest):
        await make_client(http, fake_tavily).search("   ")
    assert fake_tavily.requests == []


async def test_a_server_error_is_retried_then_succeeds(
    http: httpx.AsyncClient, fake_tavily: FakeTavily
) -> None:
    fake_tavily.mode, fake_tavily.fail_times = "down", 2

    results = await make_client(http, fake_tavily).search("retry me")

    assert len(results) == 3
    assert len(fake_tavily.requests) == 3


async def test_a_persistent_server_error_is_unavailable_after_the_retries(
    http: httpx.AsyncClient, fake_tavily: FakeTavily
) -> None:
    fake_tavily.mode = "down"

    with pytest.raises(Unavailable) as caught:
        await make_client(http, fake_tavily, max_retries=1).search("down")

    assert caught.value.details["reason"] == "down"
    assert len(fake_tavily.requests) == 2


async def test_a_rate_limit_is_not_retried_and_carries_retry_after(
    http: httpx.AsyncClient, fake_tavily: FakeTavily
) -> None:
    fake_tavily.mode, fake_tavily.retry_after_s = "rate_limited", 12

    with pytest.raises(Unavailable) as caught:
        await make_client(http, fake_tavily).search("too fast")

    assert caught.value.retry_after == 12
    assert caught.value.details["reason"] == "rate_limited"
    assert len(fake_tavily.requests) == 1


@pytest.mark.parametrize("mode,status", [("out_of_credit", 432), ("payg_limit", 433)])
async def test_an_exhausted_plan_is_unavailable_and_not_retried(
    http: httpx.AsyncClient, fake_tavily: FakeTavily, mode: str, status: int
) -> None:
    fake_tavily.mode = mode

    with pytest.raises(Unavailable) as caught:
        await make_client(http, fake_tavily).search("no credit")

    assert caught.value.details == {
        "upstream": "tavily",
        "reason": "out_of_credit",
        "status": status,
    }
    assert "usage limit" in caught.value.message or "pay-as-you-go" in caught.value.message
    assert len(fake_tavily.requests) == 1


async def test_a_wrong_key_is_unavailable_not_the_users_fault(
    http: httpx.AsyncClient, fake_tavily: FakeTavily
) -> None:
    with pytest.raises(Unavailable) as caught:
        await make_client(http, fake_tavily, key="tvly-wrong").search("who am i")
    assert caught.value.details["reason"] == "unauthorized"


async def test_a_hanging_upstream_times_out_as_unavailable(
    http: httpx.AsyncClient, fake_tavily: FakeTavily
) -> None:
    fake_tavily.mode = "hang"

    with pytest.raises(Unavailable) as caught:
        await make_client(http, fake_tavily, timeout_s=0.2, max_retries=0).search("slow")

    assert caught.value.details["reason"] == "timeout"


async def test_a_refused_connection_is_unavailable(http: httpx.AsyncClient) -> None:
    fake = FakeTavily(base_url="http://127.0.0.1:9")  # discard port: nothing listens

    with pytest.raises(Unavailable) as caught:
        await make_client(http, fake, max_retries=0).search("anyone there")

    assert caught.value.details["reason"] == "down"


async def test_the_breaker_opens_after_repeated_outages_and_fails_fast(
    http: httpx.AsyncClient, fake_tavily: FakeTavily
) -> None:
    fake_tavily.mode = "down"
    client = make_client(http, fake_tavily, max_retries=0, breaker_fail_max=2)

    for _ in range(2):
        with pytest.raises(Unavailable):
            await client.search("outage")
    assert client.breaker_state == "open"

    with pytest.raises(Unavailable) as caught:
        await client.search("outage")
    assert caught.value.details["reason"] == "circuit_open"
    assert caught.value.retry_after is not None and caught.value.retry_after > 0
    assert len(fake_tavily.requests) == 2


async def test_the_breaker_closes_after_a_successful_trial_call(
    http: httpx.AsyncClient, fake_tavily: FakeTavily
) -> None:
    fake_tavily.mode = "down"
    client = make_client(http, fake_tavily, max_retries=0, breaker_fail_max=1, breaker_reset_s=0)
    with pytest.raises(Unavailable):
        await client.search("outage")
    assert client.breaker_state == "open"

    fake_tavily.mode = "ok"
    results = await client.search("recovered")

    assert results and client.breaker_state == "closed"


async def test_an_open_breaker_waits_out_its_reset_time_on_its_clock_then_lets_one_trial_through(
    http: httpx.AsyncClient, fake_tavily: FakeTavily
) -> None:
    now = [1000.0]
    fake_tavily.mode = "down"
    client = TavilyClient(
        http,
        fake_tavily.base_url,
        API_KEY,
        max_retries=0,
        backoff_s=0.0,
        breaker_fail_max=1,
        breaker_reset_s=30.0,
        clock=lambda: now[0],
    )
    with pytest.raises(Unavailable):
        await client.search("outage")
    fake_tavily.mode = "ok"

    now[0] += 29.0
    with pytest.raises(Unavailable) as caught:
        await client.search("still open")
    assert caught.value.details["reason"] == "circuit_open"
    assert caught.value.retry_after == pytest.approx(1.0)
    assert len(fake_tavily.requests) == 1

    now[0] += 1.0
    assert await client.search("recovered")
    assert client.breaker_state == "closed"
    assert len(fake_tavily.requests) == 2


async def test_client_errors_do_not_trip_the_breaker(
    http: httpx.AsyncClient, fake_tavily: FakeTavily
) -> None:
    fake_tavily.mode = "rate_limited"
    client = make_client(http, fake_tavily, breaker_fail_max=1)

    for _ in range(3):
        with pytest.raises(Unavailable):
            await client.search("busy")

    assert client.breaker_state == "closed"
