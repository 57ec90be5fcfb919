"""The OpenAI-compatible front door spends the same budget: a spent one is OpenAI's
429 ``insufficient_quota`` before any model is asked, and its turns land in usage."""

from __future__ import annotations

import uuid

import httpx
import openai
import pytest

from server.app import create_app
from tests.budgets.conftest import usage
from tests.conftest import LiveServer, make_settings, register_user
from tests.context.answers import Answers
from tests.fakes.openrouter import FakeOpenRouter
from tests.fakes.tavily import FakeTavily


async def test_a_spent_budget_is_insufficient_quota_at_the_front_door(
    database_url: str, fake_openrouter: FakeOpenRouter, fake_tavily: FakeTavily
) -> None:
    settings = make_settings(
        database_url,
        openrouter_api_key="sk-or-test",
        openrouter_base_url=fake_openrouter.base_url,
        llm_model="openai/gpt-4o-mini",
        budget_tokens_per_period=1_000_000,
    )
    server = LiveServer(create_app(settings))
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            ada = await register_user(http, "Ada")
            client = openai.AsyncOpenAI(
                base_url=server.http_url + "/v1", api_key=ada.access_token, max_retries=0
            )
            async with client:
                await client.chat.completions.create(
                    model="parley", messages=[{"role": "user", "content": "one"}]
                )
                answers = Answers(server, http, fake_openrouter, fake_tavily)
                report = await usage(answers, ada)
                used = report["budget"]["tokens"]["used"]
                await server.container.budgets.set_limits(
                    None, uuid.UUID(ada.id), {"tokens_per_period": used}
                )
                asked = len(fake_openrouter.chat_requests)
                with pytest.raises(openai.RateLimitError) as refused:
                    await client.chat.completions.create(
                        model="parley", messages=[{"role": "user", "content": "two"}]
                    )
    finally:
        await server.stop()

    assert [line["kind"] for line in report["spend"]] == ["answer"]
    assert refused.value.status_code == 429
    body = refused.value.body
    assert isinstance(body, dict) and body["code"] == "insufficient_quota"
    assert refused.value.response.headers.get("retry-after")
    assert len(fake_openrouter.chat_requests) == asked
