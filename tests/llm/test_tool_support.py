from __future__ import annotations

from llm.resilience import ResilientProvider
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
