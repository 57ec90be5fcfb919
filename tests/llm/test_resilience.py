"""Retries, fallbacks and the breaker, against the fake OpenRouter."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from errors import BadRequest, Unavailable
from llm.offline import OfflineProvider
from llm.openrouter import OpenRouterProvider
from llm.provider import ChatRequest, NoFreeConnection, StreamFinished, TextDelta
from llm.resilience import ResilientProvider
from tests.fakes.clock import FakeClock
from tests.fakes.openrouter import FakeOpenRouter, HttpError, MidStreamError, Stream
from tests.llm.conftest import MakeProvider

PRIMARY = "openai/gpt-4o-mini"
BACKUP = "anthropic/claude-3.5-sonnet"
REQUEST = ChatRequest(PRIMARY, [{"role": "user", "content": "Hello"}])


def resilient(
    make_provider: MakeProvider, clock: FakeClock | None = None, **options: float
) -> ResilientProvider:
    settings: dict[str, float] = {
        "max_retries": 2,
        "breaker_fail_max": 3,
        "breaker_reset_s": 30,
        "backoff_initial_s": 0.001,
        "backoff_max_s": 0.01,
    }
    settings.update(options)
    if clock is not None:
        return ResilientProvider(make_provider(), [BACKUP], clock=clock, **settings)  # type: ignore[arg-type]
    return ResilientProvider(make_provider(), [BACKUP], **settings)  # type: ignore[arg-type]


async def collect(provider: ResilientProvider, **kwargs: object) -> list:  # type: ignore[type-arg]
    return [event async for event in provider.stream(REQUEST, **kwargs)]  # type: ignore[arg-type]


async def test_a_failure_before_text_is_retried_on_the_same_model(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    fake_openrouter.enqueue(HttpError(502), HttpError(503), Stream(["ok"]), model=PRIMARY)
    events = await collect(resilient(make_provider))
    assert events[0] == TextDelta("ok")
    assert events[-1].model == PRIMARY
    assert fake_openrouter.chat_models == [PRIMARY] * 3


async def test_after_the_retries_the_fallback_model_answers_and_is_named(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    fake_openrouter.defaults[PRIMARY] = HttpError(503)
    fake_openrouter.enqueue(Stream(["backup"]), model=BACKUP)
    events = await collect(resilient(make_provider))
    assert events[0] == TextDelta("backup")
    assert isinstance(events[-1], StreamFinished) and events[-1].model == BACKUP
    assert fake_openrouter.chat_models == [PRIMARY] * 3 + [BACKUP]


async def test_per_call_fallbacks_replace_the_configured_ones(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    fake_openrouter.defaults[PRIMARY] = HttpError(401)
    events = await collect(resilient(make_provider), fallbacks=["meta-llama/llama-3-8b-instruct"])
    assert events[-1].model == "meta-llama/llama-3-8b-instruct"
    # A refused key is not retried: the same key would be refused again.
    assert fake_openrouter.chat_models == [PRIMARY, "meta-llama/llama-3-8b-instruct"]


async def test_retry_after_is_honoured_between_attempts(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    fake_openrouter.enqueue(HttpError(429, retry_after=0.2), Stream(["ok"]), model=PRIMARY)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await collect(resilient(make_provider))
    assert loop.time() - started >= 0.2


async def test_a_long_retry_after_goes_straight_to_the_fallback(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    fake_openrouter.enqueue(HttpError(429, retry_after=120), model=PRIMARY)
    events = await collect(resilient(make_provider))
    assert events[-1].model == BACKUP
    assert fake_openrouter.chat_models == [PRIMARY, BACKUP]


async def test_a_bad_request_is_neither_retried_nor_passed_to_a_fallback(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    fake_openrouter.enqueue(HttpError(400, "bad messages"), model=PRIMARY)
    with pytest.raises(BadRequest):
        await collect(resilient(make_provider))
    assert fake_openrouter.chat_models == [PRIMARY]


async def test_a_failure_after_text_is_not_retried(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    fake_openrouter.enqueue(MidStreamError(["half"]), model=PRIMARY)
    events = await collect(resilient(make_provider))
    assert events[0] == TextDelta("half")
    assert events[-1].finish_reason == "error"
    assert fake_openrouter.chat_models == [PRIMARY]


async def test_when_every_model_fails_the_last_error_is_raised(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    fake_openrouter.default = HttpError(502, "model down")
    with pytest.raises(Unavailable, match="model down"):
        await collect(resilient(make_provider, max_retries=0))
    assert fake_openrouter.chat_models == [PRIMARY, BACKUP]


async def test_the_breaker_opens_after_fail_max_failed_calls_and_then_fails_fast(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    fake_openrouter.default = HttpError(503)
    provider = resilient(make_provider, max_retries=0, breaker_fail_max=2)
    for _ in range(2):
        with pytest.raises(Unavailable):
            await collect(provider)
    assert provider.breaker_states() == {"openrouter": "open"}
    asked = len(fake_openrouter.chat_requests)
    with pytest.raises(Unavailable, match="circuit open") as caught:
        await collect(provider)
    assert caught.value.retry_after is not None and 0 < caught.value.retry_after <= 30
    assert len(fake_openrouter.chat_requests) == asked


async def test_a_model_down_with_a_working_fallback_does_not_open_the_breaker(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    fake_openrouter.defaults[PRIMARY] = HttpError(502)
    provider = resilient(make_provider, max_retries=0, breaker_fail_max=2)
    for _ in range(3):
        events = await collect(provider)
        assert events[-1].model == BACKUP
    assert provider.breaker_states() == {"openrouter": "closed"}


async def test_after_the_reset_time_one_trial_call_closes_the_breaker(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    changes: list[tuple[str, str]] = []
    fake_openrouter.default = HttpError(503)
    clock = FakeClock()
    provider = ResilientProvider(
        make_provider(),
        max_retries=0,
        breaker_fail_max=1,
        breaker_reset_s=0.2,
        on_breaker_change=lambda name, state: changes.append((name, state)),
        clock=clock,
    )
    with pytest.raises(Unavailable):
        await collect(provider)
    assert provider.breaker_states()["openrouter"] == "open"
    clock.advance(provider.breakers["openrouter"].remaining_s() + 0.01)
    fake_openrouter.default = Stream(["back"])
    events = await collect(provider)
    assert events[0] == TextDelta("back")
    assert provider.breaker_states()["openrouter"] == "closed"
    assert changes == [("openrouter", s) for s in ("open", "half-open", "closed")]


async def test_a_failed_trial_reopens_the_breaker(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    fake_openrouter.default = HttpError(503)
    clock = FakeClock()
    provider = resilient(
        make_provider, clock, max_retries=0, breaker_fail_max=1, breaker_reset_s=0.2
    )
    with pytest.raises(Unavailable):
        await collect(provider)
    clock.advance(provider.breakers["openrouter"].remaining_s() + 0.01)
    with pytest.raises(Unavailable):
        await collect(provider)
    assert provider.breaker_states()["openrouter"] == "open"
    assert provider.breakers["openrouter"].remaining_s() > 0.1


async def test_closing_the_resilient_stream_closes_the_upstream(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    fake_openrouter.enqueue(Stream(["tok"] * 1000, delay_s=0.01))
    stream = resilient(make_provider).stream(REQUEST)
    assert await anext(stream) == TextDelta("tok")
    await stream.aclose()  # type: ignore[attr-defined]
    assert await fake_openrouter.wait_disconnect()


async def test_a_prefixed_fallback_reaches_another_provider(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    fake_openrouter.default = HttpError(503)
    provider = ResilientProvider(
        {"openrouter": make_provider(), "offline": OfflineProvider(0)},
        ["offline:parley-offline"],
        max_retries=0,
    )
    events = await collect(provider)
    assert isinstance(events[0], TextDelta)
    assert events[-1].model == "offline:parley-offline"
    assert provider.breaker_states() == {"openrouter": "closed", "offline": "closed"}


async def test_complete_falls_back_too(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    fake_openrouter.defaults[PRIMARY] = HttpError(502)
    fake_openrouter.enqueue(Stream(["from backup"]), model=BACKUP)
    assert await resilient(make_provider, max_retries=0).complete(REQUEST) == "from backup"


async def test_a_node_out_of_connections_says_so_without_blaming_the_upstream(
    fake_openrouter: FakeOpenRouter,
) -> None:
    # A streamed answer holds its connection while it runs; a node at its limit must
    # not count that against the upstream, or a busy node would open its own breaker.
    fake_openrouter.enqueue(Stream(["slow "] * 20, delay_s=0.05), Stream(["later"]))
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=1)) as client:
        upstream = OpenRouterProvider(
            client,
            fake_openrouter.base_url,
            "sk-or-test",
            referer="https://parley.test",
            title="Parley tests",
            connect_timeout_s=0.2,
        )
        provider = ResilientProvider(upstream, [BACKUP], max_retries=2, breaker_fail_max=1)
        running = provider.stream(REQUEST)
        assert isinstance(await anext(running), TextDelta)

        with pytest.raises(NoFreeConnection, match="as many questions as it can"):
            await collect(provider)

        assert len(fake_openrouter.chat_requests) == 1  # no retry, no fallback
        assert provider.breaker_states() == {"openrouter": "closed"}
        await running.aclose()
        events = await collect(provider)
        assert events[-1].finish_reason == "stop"
