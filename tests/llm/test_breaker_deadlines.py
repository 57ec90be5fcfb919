"""The first-token deadline across retries and fallbacks, mid-stream failures and the
breaker, and a half-open breaker under concurrent callers; against the fake
OpenRouter over real HTTP. The breaker's clock is a ``FakeClock``: tests move it past
the reset timeout instead of sleeping through it."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from errors import Unavailable
from llm.provider import ChatRequest, StreamFinished, TextDelta
from llm.resilience import ResilientProvider
from tests.fakes.clock import FakeClock
from tests.fakes.openrouter import (
    Cut,
    FakeOpenRouter,
    Hang,
    HttpError,
    MidStreamError,
    Scenario,
    Silent,
    Stream,
)
from tests.llm.conftest import MakeProvider

PRIMARY = "openai/gpt-4o-mini"
BACKUP = "anthropic/claude-3.5-sonnet"
REQUEST = ChatRequest(PRIMARY, [{"role": "user", "content": "Hello"}])
# Far beyond any deadline these tests set: the call must end long before it.
NEVER_S = 20


def resilient(
    make_provider: MakeProvider, clock: FakeClock | None = None, **options: Any
) -> ResilientProvider:
    timeouts = {k: options.pop(k) for k in list(options) if k.endswith("timeout_s")}
    settings: dict[str, Any] = {
        "max_retries": 2,
        "breaker_fail_max": 3,
        "breaker_reset_s": 30,
        "backoff_initial_s": 0.001,
        "backoff_max_s": 0.01,
    }
    settings.update(options)
    if clock is not None:
        settings["clock"] = clock
    return ResilientProvider(make_provider(**timeouts), [BACKUP], **settings)


async def collect(provider: ResilientProvider, request: ChatRequest = REQUEST) -> list[Any]:
    async with asyncio.timeout(NEVER_S):
        return [event async for event in provider.stream(request)]


# -- the first-token deadline ---------------------------------------------------------


@pytest.mark.parametrize("scenario", [Silent(), Hang()], ids=["no-headers", "comments-only"])
async def test_a_hung_upstream_fails_within_the_deadline_not_after_every_retry(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider, scenario: Scenario
) -> None:
    # Each attempt alone may wait a minute (the default first-token timeout), and there
    # are three attempts on two models: the call as a whole may not.
    fake_openrouter.default = scenario
    provider = resilient(make_provider, first_token_deadline_s=0.5)

    with pytest.raises(Unavailable, match=r"did not start answering within 0\.5 s"):
        await collect(provider)

    assert await fake_openrouter.wait_disconnect()  # the hung attempt was hung up on


async def test_a_retry_within_the_deadline_still_answers(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    # The provider's own first-token timeout ends the hung attempt; the deadline leaves
    # room for the retry.
    fake_openrouter.enqueue(Silent(), Stream(["second try"]), model=PRIMARY)
    provider = resilient(make_provider, first_token_timeout_s=0.3, first_token_deadline_s=15)

    events = await collect(provider)

    assert events[0] == TextDelta("second try")
    assert fake_openrouter.chat_models == [PRIMARY, PRIMARY]


async def test_no_backoff_sleeps_past_the_deadline(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    # A Retry-After the deadline cannot afford is not waited for on the same model, and
    # once the deadline has passed no fallback is tried.
    fake_openrouter.default = HttpError(503, retry_after=5)
    provider = resilient(make_provider, first_token_deadline_s=1, max_retry_after_s=10)

    with pytest.raises(Unavailable):
        await collect(provider)

    assert fake_openrouter.chat_models == [PRIMARY, BACKUP]


# -- failures after the first token count ---------------------------------------------

MID_STREAM = {
    "error-chunk": MidStreamError(["half"]),
    "dropped": Cut(["half"]),
    "stalled": Stream(["half"], hang_after=True),
}


@pytest.mark.parametrize("scenario", list(MID_STREAM.values()), ids=list(MID_STREAM))
async def test_failures_after_the_first_token_open_the_breaker(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider, scenario: Scenario
) -> None:
    fake_openrouter.default = scenario
    provider = resilient(make_provider, idle_timeout_s=0.3, breaker_fail_max=2)

    for _ in range(2):
        events = await collect(provider)
        assert events[0] == TextDelta("half")
        assert isinstance(events[-1], StreamFinished) and events[-1].finish_reason == "error"
    assert provider.breaker_states() == {"openrouter": "open"}

    asked = len(fake_openrouter.chat_requests)
    with pytest.raises(Unavailable, match="circuit open"):
        await collect(provider)
    assert len(fake_openrouter.chat_requests) == asked


async def test_a_finished_answer_resets_the_count_of_broken_ones(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    fake_openrouter.enqueue(MidStreamError(["a"]), Stream(["fine"]), MidStreamError(["b"]))
    provider = resilient(make_provider, breaker_fail_max=2)

    for _ in range(3):
        await collect(provider)

    assert provider.breaker_states() == {"openrouter": "closed"}
    assert provider.breakers["openrouter"].fail_counter == 1


# -- half-open: one probe, then everyone ----------------------------------------------


async def open_the_breaker(
    fake: FakeOpenRouter, make_provider: MakeProvider, clock: FakeClock
) -> ResilientProvider:
    fake.default = HttpError(503)
    provider = resilient(make_provider, clock, max_retries=0, breaker_fail_max=1)
    with pytest.raises(Unavailable):
        await collect(provider)
    assert provider.breaker_states() == {"openrouter": "open"}
    with pytest.raises(Unavailable, match="circuit open"):
        await collect(provider)
    clock.now += 30  # the reset timeout, without waiting for it
    return provider


async def test_after_one_good_probe_a_recovering_upstream_serves_every_concurrent_caller(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    clock = FakeClock()
    provider = await open_the_breaker(fake_openrouter, make_provider, clock)
    asked = len(fake_openrouter.chat_requests)
    fake_openrouter.default = Stream(["back", " again"], delay_s=0.05)

    answers = await asyncio.gather(*(collect(provider) for _ in range(5)))

    assert [events[0] for events in answers] == [TextDelta("back")] * 5
    assert all(events[-1].finish_reason == "stop" for events in answers)
    assert provider.breaker_states() == {"openrouter": "closed"}
    assert len(fake_openrouter.chat_requests) == asked + 5


async def test_a_failed_probe_fails_the_callers_waiting_on_it_fast(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    clock = FakeClock()
    provider = await open_the_breaker(fake_openrouter, make_provider, clock)
    asked = len(fake_openrouter.chat_requests)

    outcomes = await asyncio.gather(*(collect(provider) for _ in range(5)), return_exceptions=True)

    assert all(isinstance(o, Unavailable) for o in outcomes)
    messages = sorted(str(o) for o in outcomes)
    assert sum("circuit open" in m for m in messages) == 4, messages
    # Only the probe went out (to the model and its fallback).
    assert fake_openrouter.chat_models[asked:] == [PRIMARY, BACKUP]
    assert provider.breaker_states() == {"openrouter": "open"}


async def test_a_probe_cancelled_before_answering_hands_over_to_a_waiting_caller(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    clock = FakeClock()
    provider = await open_the_breaker(fake_openrouter, make_provider, clock)
    fake_openrouter.enqueue(Silent(), model=PRIMARY)  # the probe hears nothing
    fake_openrouter.default = Stream(["ok"])

    sent = asyncio.Event()
    probe = asyncio.create_task(collect(provider, replace(REQUEST, on_sent=sent.set)))
    await sent.wait()  # the probe is out
    waiter = asyncio.create_task(collect(provider))
    await asyncio.sleep(0)  # the waiter runs up to its wait for the probe's verdict
    probe.cancel()

    events = await waiter
    assert events[0] == TextDelta("ok")
    assert provider.breaker_states() == {"openrouter": "closed"}
    with pytest.raises(asyncio.CancelledError):
        await probe
