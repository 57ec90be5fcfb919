from __future__ import annotations

from llm.provider import ChatRequest, StreamFinished
from llm.resilience import ResilientProvider
from search.service import WEB_SEARCH_TOOL
from tests.fakes.openrouter import FakeOpenRouter
from tests.llm.conftest import MakeProvider


async def test_tool_support_is_read_from_the_models_supported_parameters(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    fake_openrouter.tool_models = {"openai/gpt-4o-mini"}
    provider = ResilientProvider(make_provider())

    assert await provider.supports_tools("openai/gpt-4o-mini") is True
    assert await provider.supports_tools("meta-llama/llama-3-8b-instruct") is False
    assert await provider.supports_tools("no/such-model") is False
    models_fetched = [r for r in fake_openrouter.requests if r.path.endswith("/models")]
    assert len(models_fetched) == 1  # one catalogue fetch serves every question


async def test_tool_choice_goes_only_to_models_that_take_it(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    fake_openrouter.tool_models = {"openai/gpt-4o-mini"}
    provider = make_provider()
    await provider.catalog.refresh()
    for model in ("openai/gpt-4o-mini", "meta-llama/llama-3-8b-instruct"):
        request = ChatRequest(
            model, [{"role": "user", "content": "hi"}], tools=[WEB_SEARCH_TOOL], tool_choice="none"
        )
        events = [event async for event in provider.stream(request)]
        assert isinstance(events[-1], StreamFinished)

    takes_it, does_not = (r.json or {} for r in fake_openrouter.chat_requests)
    assert takes_it["tool_choice"] == "none"
    assert "tool_choice" not in does_not and does_not["tools"] == [WEB_SEARCH_TOOL]
