"""The offline model: deterministic, paced, and visibly using its context."""

from __future__ import annotations

import orjson

from llm.offline import OfflineProvider
from llm.provider import ChatRequest, StreamFinished, TextDelta
from llm.summarise import fold
from llm.tokens import count_messages, count_text

CONTEXT = """You are Parley's assistant.

## Memory
- Prefers answers in metric units

## Web search results
1. Paris weather this week
Sunny, 24 °C. https://weather.example/paris

## Conversation summary
Alice is planning a 3-day trip to Paris in June.
"""
MESSAGES = [
    {"role": "system", "content": CONTEXT},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "What should I pack for Paris?"},
]


async def reply_of(provider: OfflineProvider, request: ChatRequest) -> tuple[str, StreamFinished]:
    events = [event async for event in provider.stream(request)]
    end = events[-1]
    assert isinstance(end, StreamFinished)
    assert all(isinstance(event, TextDelta) for event in events[:-1])
    return "".join(event.text for event in events[:-1]), end  # type: ignore[union-attr]


async def test_the_offline_reply_says_what_it_is_and_is_deterministic() -> None:
    provider = OfflineProvider(token_delay_s=0)
    first, end = await reply_of(provider, ChatRequest("parley-offline", MESSAGES))
    again, _ = await reply_of(provider, ChatRequest("parley-offline", MESSAGES))
    assert first == again
    assert "Parley's offline model" in first
    assert "OPENROUTER_API_KEY" in first
    assert end.finish_reason == "stop"
    assert end.generation_id is not None and end.generation_id.startswith("offline-")


async def test_the_offline_reply_quotes_the_user_and_counts_earlier_turns() -> None:
    text, _ = await reply_of(OfflineProvider(0), ChatRequest("m", MESSAGES))
    assert '"What should I pack for Paris?"' in text
    assert "2 earlier turns" in text


async def test_the_offline_reply_shows_memory_search_and_summary_sections() -> None:
    text, _ = await reply_of(OfflineProvider(0), ChatRequest("m", MESSAGES))
    assert "Prefers answers in metric units" in text
    assert "Paris weather this week" in text
    assert "https://weather.example/paris" in text
    assert "Alice is planning a 3-day trip to Paris in June." in text


async def test_the_offline_reply_mentions_retrieved_passages() -> None:
    messages = [
        {"role": "system", "content": "[Retrieved passages]\nThe warranty lasts 24 months."},
        {"role": "user", "content": "How long is the warranty?"},
    ]
    text, _ = await reply_of(OfflineProvider(0), ChatRequest("m", messages))
    assert "The warranty lasts 24 months." in text
    assert "start of our conversation" in text


async def test_offline_usage_is_counted_with_the_shared_tokenizer() -> None:
    text, end = await reply_of(OfflineProvider(0), ChatRequest("m", MESSAGES))
    assert end.usage is not None
    assert end.usage.prompt_tokens == count_messages(MESSAGES)
    assert end.usage.completion_tokens == count_text(text)


async def test_max_tokens_cuts_the_offline_reply_with_length() -> None:
    _, end = await reply_of(OfflineProvider(0), ChatRequest("m", MESSAGES, max_tokens=5))
    assert end.finish_reason == "length"
    assert end.usage is not None and end.usage.completion_tokens <= 5


async def test_memory_extraction_returns_rule_based_json_items() -> None:
    request = ChatRequest(
        "m",
        [{"role": "user", "content": "My name is Ada Lovelace. I prefer tea. I like chess."}],
        response_format={"type": "json_object"},
    )
    items = orjson.loads(await OfflineProvider(0).complete(request))["items"]
    assert {"kind": "fact", "content": "Name: Ada Lovelace"} in items
    assert {"kind": "preference", "content": "Prefers tea"} in items
    assert {"kind": "preference", "content": "Likes chess"} in items


async def test_memory_extraction_with_nothing_to_keep_is_an_empty_list() -> None:
    messages = [{"role": "user", "content": "What time is it?"}]
    request = ChatRequest("m", messages, response_format={"type": "json_object"})
    assert orjson.loads(await OfflineProvider(0).complete(request)) == {"items": []}


async def test_folding_with_the_offline_model_keeps_names_numbers_and_decisions() -> None:
    turns = [
        {"role": "user", "content": "Hi there! My name is Priya and I manage the Lisbon office."},
        {"role": "assistant", "content": "Nice to meet you, Priya."},
        {"role": "user", "content": "We decided to launch on 14 March. Budget is 12000 EUR."},
        {"role": "user", "content": "ok thanks"},
    ]
    summary = await fold(
        OfflineProvider(0), "m", "Earlier: Priya asked about hiring.", turns, max_summary_tokens=200
    )
    for fact in ("Earlier: Priya asked about hiring.", "Priya", "Lisbon", "14 March", "12000 EUR"):
        assert fact in summary


async def test_a_fold_is_cut_to_the_summary_budget() -> None:
    turns = [{"role": "user", "content": f"Fact number {i} is {i * 7}."} for i in range(200)]

    summary = await fold(OfflineProvider(0), "m", None, turns, max_summary_tokens=50)
    assert 0 < count_text(summary) <= 50
    assert summary.startswith("User: Fact number 0 is 0.")


async def test_folding_no_turns_keeps_the_summary() -> None:
    assert await fold(OfflineProvider(0), "m", "kept", [], max_summary_tokens=10) == "kept"


async def test_the_offline_reply_reads_the_context_builders_section_headings() -> None:
    # The headings and layouts of llm.context, search.service and rag.ranking.
    system = "\n\n".join(
        [
            "You are Parley's assistant.",
            "What you know about the user:\n- (fact) Lives in Oslo",
            "Summary of the earlier conversation:\nThey chose Rust for the backend.",
            "Relevant excerpts (from this session's documents and earlier messages):"
            "\n\n[handbook.md]\nRefunds take 14 days.\n\n[faq.md]\nNo.",
            "Web search results (cite as [n]):\n\n[1] Oslo weather\nURL: https://met.example/oslo"
            "\nRain all week.",
        ]
    )
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "Hi"}]
    text, _ = await reply_of(OfflineProvider(0), ChatRequest("m", messages))
    assert "(fact) Lives in Oslo" in text
    assert "They chose Rust for the backend." in text
    assert '"Refunds take 14 days."' in text
    assert '"[1] Oslo weather" (https://met.example/oslo)' in text


async def test_a_passage_from_a_markdown_file_that_opens_with_a_heading_is_quoted() -> None:
    # rag.ranking's layout for a chunk of an uploaded .md file: its heading comes first.
    system = "\n\n".join(
        [
            "You are Parley's assistant.",
            "Relevant excerpts (from this session's documents and earlier messages):"
            "\n\n[document “guide.md” > Backups]\n# Operations guide\n\n## Backups\n\n"
            "The nightly backup runs at 02:30 UTC.",
        ]
    )
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "Backups?"}]

    text, _ = await reply_of(OfflineProvider(0), ChatRequest("m", messages))

    assert 'Your documents say: "The nightly backup runs at 02:30 UTC."' in text
