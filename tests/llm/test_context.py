from __future__ import annotations

from typing import Any

import pytest

from errors import TooLarge
from llm.context import BuiltContext, build_context
from llm.tokens import count_messages, count_text, message_tokens


def turns(n: int, words: int = 50) -> list[dict[str, Any]]:
    history = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " + "blah " * words}
        for i in range(n)
    ]
    return [*history, {"role": "user", "content": "What now?"}]


def build(**overrides: Any) -> BuiltContext:
    args: dict[str, Any] = {
        "system_prompt": "You are Parley's assistant.",
        "memory_items": ["prefers short answers", "lives in Oslo"],
        "summary": "Earlier they discussed trains.",
        "passages_text": "Relevant excerpts:\n\n[document “Manual”]\nPress the red button.",
        "search_text": "Web search results (cite as [n]):\n\n[1] Oslo\nURL: https://x\nCold.",
        "search_note": None,
        "history_turns": turns(4, words=10),
        "window_tokens": 8000,
        "reply_reserve_tokens": 1000,
    }
    args.update(overrides)
    return build_context(**args)


def test_everything_fits_in_the_documented_order() -> None:
    built = build()

    system = built.messages[0]["content"]
    order = [
        system.index("You are Parley's assistant."),
        system.index("What you know about the user:\n- prefers short answers\n- lives in Oslo"),
        system.index("Summary of the earlier conversation:\nEarlier they discussed trains."),
        system.index("[document “Manual”]"),
        system.index("[1] Oslo"),
    ]
    assert order == sorted(order)
    assert [m["content"][:6] for m in built.messages[1:-1]] == [
        "turn 0",
        "turn 1",
        "turn 2",
        "turn 3",
    ]
    assert built.messages[-1] == {"role": "user", "content": "What now?"}
    assert built.prompt_tokens == count_messages(built.messages)
    assert set(built.dropped.values()) == {0}


def test_empty_sections_leave_no_headers() -> None:
    built = build(memory_items=[], summary=None, passages_text="", search_text="")
    assert built.messages[0]["content"] == "You are Parley's assistant."


def test_the_search_note_is_kept_when_search_failed() -> None:
    note = "A web search was attempted but is unavailable right now."
    built = build(search_text="", search_note=note)
    assert built.messages[0]["content"].endswith(note)


def test_oldest_turns_go_first_and_the_newest_are_kept() -> None:
    built = build(history_turns=turns(60, words=40), window_tokens=2000, reply_reserve_tokens=500)

    contents = [m["content"] for m in built.messages[1:-1]]
    assert contents[-1].startswith("turn 59")
    assert not any(c.startswith("turn 0 ") for c in contents)
    assert built.dropped["turns"] > 0
    assert built.dropped["memory"] == 0
    assert built.prompt_tokens <= 1500


def test_unused_section_shares_flow_to_recent_turns() -> None:
    full = build(history_turns=turns(60, words=40), window_tokens=3000, reply_reserve_tokens=500)
    bare = build(
        history_turns=turns(60, words=40),
        window_tokens=3000,
        reply_reserve_tokens=500,
        memory_items=[],
        summary=None,
        passages_text="",
        search_text="",
    )
    assert len(bare.messages) > len(full.messages)


def test_a_huge_section_is_capped_at_its_share() -> None:
    built = build(
        passages_text="passage " * 5000,
        window_tokens=4000,
        reply_reserve_tokens=1000,
        history_turns=turns(2),
    )
    assert built.dropped["passages"] > 0
    passages_kept = count_text("passage " * 5000) - built.dropped["passages"]
    assert passages_kept <= 0.30 * 3000
    assert built.dropped["turns"] == 0


def test_when_tight_search_goes_before_passages_and_memory_last() -> None:
    big = "word " * 600
    built = build(
        memory_items=[f"memory item {i}" for i in range(5)],
        summary=big,
        passages_text=big,
        search_text=big,
        history_turns=turns(12, words=60),
        window_tokens=900,
        reply_reserve_tokens=400,
    )
    system = built.messages[0]["content"]
    assert built.dropped["turns"] > 0
    assert len(built.messages) == 1 + 4 + 1  # the newest KEEP_TURNS survive step 1
    assert built.dropped["search"] == count_text(big.strip())  # search went entirely...
    assert 0 < built.dropped["passages"] < count_text(big)  # ...before passages did
    assert "memory item 4" in system
    assert built.dropped["memory"] == 0
    assert built.prompt_tokens <= 500


def test_a_tiny_window_keeps_only_the_system_prompt_and_current_message() -> None:
    built = build(history_turns=turns(10), window_tokens=160, reply_reserve_tokens=100)

    assert built.messages[0]["content"].startswith("You are Parley's assistant.")
    assert built.messages[-1]["content"] == "What now?"
    assert built.prompt_tokens <= 60


def test_a_message_that_cannot_fit_is_too_large() -> None:
    with pytest.raises(TooLarge):
        build(
            history_turns=[{"role": "user", "content": "long " * 1000}],
            window_tokens=600,
            reply_reserve_tokens=100,
        )


@pytest.mark.parametrize("window", [300, 700, 1200, 2500, 6000])
@pytest.mark.parametrize("words", [5, 80, 400])
def test_the_result_never_exceeds_window_minus_reserve(window: int, words: int) -> None:
    text = "lorem ipsum 東京 émigré 🎉 " * words
    built = build(
        memory_items=[f"fact {i}: {text[:80]}" for i in range(20)],
        summary=text,
        passages_text=text,
        search_text=text,
        search_note="Search was rate limited.",
        history_turns=turns(30, words=words),
        window_tokens=window,
        reply_reserve_tokens=200,
    )
    assert count_messages(built.messages) <= window - 200
    assert built.prompt_tokens == count_messages(built.messages)
    assert built.messages[-1]["content"] == "What now?"


@pytest.mark.parametrize("window", [1500, 3000, 8000])
def test_costs_counted_by_the_caller_build_the_same_request(window: int) -> None:
    history = turns(30, words=40)
    costs = [message_tokens(turn) for turn in history]

    assert build(history_turns=history, window_tokens=window, history_costs=costs) == build(
        history_turns=history, window_tokens=window
    )
