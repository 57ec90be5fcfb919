"""A slow or broken Tavily as a user meets it: a real server, a WebSocket client, the
fake OpenRouter answering."""

from __future__ import annotations

import pytest

from tests.context.answers import answers_factory, details
from tests.fakes.openrouter import FakeOpenRouter
from tests.fakes.tavily import FakeTavily


@pytest.mark.parametrize("mode", ["hang", "slow", "invalid_json", "huge"])
async def test_the_answer_goes_on_without_search_after_the_search_deadline(
    database_url: str, fake_openrouter: FakeOpenRouter, fake_tavily: FakeTavily, mode: str
) -> None:
    # Per attempt the defaults stand (10 s, two retries): 30 s before, for every answer
    # that searched; the answer's own wait for its stream is 15 s here.
    fake_tavily.mode, fake_tavily.slow_s = mode, 20.0
    start = answers_factory(database_url, fake_openrouter, fake_tavily)
    async with start(search_deadline_s=1.0, search_max_body_bytes=64 * 1024) as answers:
        ada = await answers.user()

        streamed = await answers.ask(
            ada, await answers.session(ada), "parley release notes", search=True
        )

        assert streamed.end is not None and streamed.end["finish_reason"] == "stop"
        assert streamed.text == "Hello from the fake."
        assert any("web search unavailable" in detail for detail in details(streamed))
        assert "web search was attempted" in answers.system()
    assert len(fake_tavily.requests) == 1
