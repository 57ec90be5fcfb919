"""Fold planning and the last-resort fit: pure token arithmetic."""

from __future__ import annotations

import asyncio

from errors import Unavailable
from llm.catalog import ModelCatalog
from llm.summarise import fit_messages, fold_request, plan_fold
from llm.tokens import TOKENS_PER_MESSAGE, TOKENS_REPLY_PRIMER, count_messages, message_tokens

SYSTEM = {"role": "system", "content": "You are Parley's assistant."}


def turns(n: int, words: int = 20) -> list[dict[str, str]]:
    role = ("user", "assistant")
    return [{"role": role[i % 2], "content": f"turn {i} " + "word " * words} for i in range(n)]


def test_nothing_is_folded_when_everything_fits() -> None:
    history = [SYSTEM, *turns(4)]
    assert plan_fold(history, 0, count_messages(history), keep_recent_min=2) == 0


def test_the_fewest_oldest_turns_are_folded_to_fit_the_budget() -> None:
    history = [SYSTEM, *turns(6)]
    per_turn = message_tokens(history[1])
    budget = count_messages(history) - per_turn  # one turn too many
    assert plan_fold(history, 0, budget, keep_recent_min=2) == 1
    assert plan_fold(history, 0, budget - per_turn, keep_recent_min=2) == 2


def test_the_summary_counts_against_the_budget_with_its_framing() -> None:
    history = [SYSTEM, *turns(6)]
    budget = count_messages(history)
    assert plan_fold(history, 0, budget, keep_recent_min=1) == 0
    assert plan_fold(history, 1, budget, keep_recent_min=1) == 1
    summary_tokens = budget - TOKENS_REPLY_PRIMER - message_tokens(SYSTEM) - TOKENS_PER_MESSAGE
    assert plan_fold(history, summary_tokens, budget, keep_recent_min=1) == 6 - 1


def test_costs_counted_by_the_caller_plan_the_same_fold() -> None:
    history = [SYSTEM, *turns(12)]
    costs = [message_tokens(turn) for turn in history[1:]]
    for budget in range(0, count_messages(history) + 40, 37):
        assert plan_fold(history, 5, budget, 2, costs=costs) == plan_fold(history, 5, budget, 2)


def test_the_most_recent_turns_are_never_folded() -> None:
    history = [SYSTEM, *turns(5)]
    assert plan_fold(history, 0, 10, keep_recent_min=3) == 2
    assert plan_fold(history, 0, 10, keep_recent_min=10) == 0


def test_system_messages_are_never_folded() -> None:
    history = [SYSTEM, SYSTEM, *turns(2)]
    assert plan_fold(history, 0, 1, keep_recent_min=0) == 2


def test_fit_messages_truncates_the_oldest_turn_first() -> None:
    history = [SYSTEM, *turns(3, words=100)]
    budget = count_messages(history) - 50
    fitted = fit_messages(history, budget)
    assert count_messages(fitted) <= budget
    assert fitted[0] == SYSTEM
    assert fitted[-1] == history[-1]
    assert len(fitted[1]["content"]) < len(history[1]["content"])
    assert fitted[1]["content"].endswith("word ")  # the tail of the old turn is kept


def test_fit_messages_never_exceeds_even_a_tiny_window() -> None:
    history = [SYSTEM, *turns(4, words=300)]
    for budget in (400, 100, 40):
        assert count_messages(fit_messages(history, budget)) <= budget


def test_a_fold_request_is_bounded_by_the_input_budget() -> None:
    request = fold_request(
        "m", "old summary", turns(50, words=100), max_summary_tokens=100, max_input_tokens=500
    )
    assert count_messages(request.messages) <= 500
    assert request.max_tokens == 100


async def test_the_catalogue_override_wins_and_fetch_failures_are_not_fatal() -> None:
    calls = 0

    async def failing() -> dict[str, int]:
        nonlocal calls
        calls += 1
        raise Unavailable("down")

    catalog = ModelCatalog(failing, overrides={"a": 1000})
    assert await catalog.context_length("a") == 1000
    assert await catalog.context_length("b") is None
    assert await catalog.context_length("b") is None
    assert calls == 1  # the failure is remembered for a while
    assert await ModelCatalog(failing, override=4096).context_length("b") == 4096


async def test_the_catalogue_refreshes_after_its_ttl() -> None:
    now = 0.0
    lengths = {"a": 1}

    async def fetch() -> dict[str, int]:
        return dict(lengths)

    catalog = ModelCatalog(fetch, ttl_s=10, clock=lambda: now)
    assert await catalog.context_length("a") == 1
    lengths["a"] = 2
    assert await catalog.context_length("a") == 1
    now = 11.0
    # Stale: it answers at once and fetches behind.
    assert await catalog.context_length("a") == 1
    await asyncio.sleep(0)
    assert await catalog.context_length("a") == 2
    await catalog.aclose()


async def test_no_question_waits_for_a_catalogue_fetched_at_start_up_or_when_stale() -> None:
    now = 0.0
    fetches = 0
    release = asyncio.Event()

    async def slow_fetch() -> dict[str, int]:
        nonlocal fetches
        fetches += 1
        if fetches > 1:
            await release.wait()  # the upstream is slow today
        return {"a": 1000 * fetches}

    catalog = ModelCatalog(slow_fetch, ttl_s=10, clock=lambda: now)
    catalog.warm()
    await asyncio.sleep(0)
    assert fetches == 1
    assert await catalog.context_length("a") == 1000  # fetched at start-up

    now = 11.0
    answers = [await asyncio.wait_for(catalog.context_length("a"), 0.1) for _ in range(3)]
    assert answers == [1000, 1000, 1000] and fetches == 2  # one fetch behind them
    release.set()
    await asyncio.sleep(0)
    assert await catalog.context_length("a") == 2000
    await catalog.aclose()
