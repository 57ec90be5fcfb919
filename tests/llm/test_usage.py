"""Usage of a stream that ended without reporting it."""

from __future__ import annotations

from errors import Unavailable
from llm.provider import ChatRequest, Usage
from llm.tokens import count_messages, count_text
from llm.usage import estimate_usage, recover_usage
from tests.fakes.openrouter import FakeOpenRouter, Stream
from tests.llm.conftest import MakeProvider


def test_the_estimate_counts_prompt_and_partial_text() -> None:
    messages = [{"role": "user", "content": "Tell me a story"}]
    assert estimate_usage(messages, "Once upon") == Usage(
        count_messages(messages), count_text("Once upon")
    )


async def test_recovery_asks_again_until_the_upstream_knows() -> None:
    answers: list[Usage | Exception | None] = [Unavailable("down"), None, Usage(10, 3)]

    async def lookup(generation_id: str) -> Usage | None:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert await recover_usage(lookup, "gen-1", attempts=3, delay_s=0) == Usage(10, 3)


async def test_recovery_gives_up_with_none() -> None:
    async def lookup(generation_id: str) -> Usage | None:
        return None

    assert await recover_usage(lookup, "gen-1", attempts=2, delay_s=0) is None


async def test_recovery_reads_openrouters_generation_record(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    fake_openrouter.enqueue(Stream(["a", "b"]))
    provider = make_provider()
    request = ChatRequest("openai/gpt-4o-mini", [{"role": "user", "content": "hi"}])
    events = [event async for event in provider.stream(request)]
    generation_id = events[-1].generation_id  # type: ignore[union-attr]
    assert generation_id is not None
    usage = await recover_usage(provider.generation_usage, generation_id, delay_s=0)
    assert usage == events[-1].usage  # type: ignore[union-attr]
