from __future__ import annotations

import httpx

from tests.conftest import register_user
from tests.context.conftest import AppClient
from tests.fakes.tavily import FakeTavily


def tavily_settings(fake: FakeTavily) -> dict[str, object]:
    return {"tavily_api_key": fake.api_key, "tavily_base_url": fake.base_url}


async def test_search_returns_results_and_serves_a_repeat_from_the_cache(
    app_with: AppClient, fake_tavily: FakeTavily
) -> None:
    async with app_with(**tavily_settings(fake_tavily)) as client:
        user = await register_user(client)

        first = await client.get("/v1/search", params={"q": "python release"}, headers=user.headers)
        second = await client.get(
            "/v1/search", params={"q": "  Python   RELEASE "}, headers=user.headers
        )

    assert first.status_code == second.status_code == 200
    body = first.json()["data"]
    assert body["query"] == "python release"
    assert body["cached"] is False and body["note"] is None
    assert [r["title"] for r in body["results"]][:1] == ["Result 1 about python release"]
    assert set(body["results"][0]) == {"title", "url", "content", "score"}
    assert second.json()["data"]["cached"] is True
    assert second.json()["data"]["results"] == body["results"]
    assert len(fake_tavily.requests) == 1


async def test_tavily_down_is_a_200_with_an_unavailable_note(
    app_with: AppClient, fake_tavily: FakeTavily
) -> None:
    fake_tavily.mode = "down"
    async with app_with(**tavily_settings(fake_tavily)) as client:
        user = await register_user(client)

        response = await client.get("/v1/search", params={"q": "anything"}, headers=user.headers)

    assert response.status_code == 200
    body = response.json()["data"]
    assert body["results"] == [] and body["cached"] is False
    assert "unavailable" in body["note"]


async def test_a_rate_limited_tavily_is_reported_with_its_retry_after(
    app_with: AppClient, fake_tavily: FakeTavily
) -> None:
    fake_tavily.mode = "rate_limited"
    async with app_with(**tavily_settings(fake_tavily)) as client:
        user = await register_user(client)

        response = await client.get("/v1/search", params={"q": "anything"}, headers=user.headers)

    body = response.json()["data"]
    assert response.status_code == 200
    assert body["note"] == "web search is rate limited"
    assert body["retry_after"] == fake_tavily.retry_after_s


async def test_search_without_a_tavily_key_says_it_is_not_configured(
    client: httpx.AsyncClient,
) -> None:
    user = await register_user(client)

    response = await client.get("/v1/search", params={"q": "anything"}, headers=user.headers)

    assert response.status_code == 200
    assert response.json()["data"]["note"] == "web search is not configured"


async def test_an_empty_query_is_a_bad_request(client: httpx.AsyncClient) -> None:
    user = await register_user(client)

    missing = await client.get("/v1/search", headers=user.headers)
    blank = await client.get("/v1/search", params={"q": "   "}, headers=user.headers)

    assert missing.status_code == blank.status_code == 400
    assert missing.json()["error"]["code"] == "bad_request"


async def test_search_needs_credentials(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/search", params={"q": "anything"})

    assert response.status_code == 401


async def test_search_is_rate_limited_per_user(
    app_with: AppClient, fake_tavily: FakeTavily
) -> None:
    async with app_with(**tavily_settings(fake_tavily)) as client:
        ada, bob = await register_user(client, "Ada"), await register_user(client, "Bob")
        for _ in range(30):
            ok = await client.get("/v1/search", params={"q": "same"}, headers=ada.headers)
            assert ok.status_code == 200

        limited = await client.get("/v1/search", params={"q": "same"}, headers=ada.headers)
        other = await client.get("/v1/search", params={"q": "same"}, headers=bob.headers)

    assert limited.status_code == 429
    assert limited.json()["error"]["code"] == "rate_limited"
    assert "Retry-After" in limited.headers
    assert other.status_code == 200


async def test_readiness_reports_the_tavily_circuit(
    app_with: AppClient, fake_tavily: FakeTavily
) -> None:
    async with app_with(**tavily_settings(fake_tavily)) as client:
        probe = client.container.readiness["tavily"]  # type: ignore[attr-defined]

        assert probe() == "ok"
