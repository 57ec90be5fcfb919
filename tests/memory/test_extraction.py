from __future__ import annotations

import orjson
import pytest

from errors import Unavailable
from llm.provider import ChatRequest
from memory.extraction import (
    Candidate,
    MemoryItem,
    build_extraction_request,
    extract_memory,
    parse_extraction,
    reconcile,
)


def answer(*items: dict[str, object]) -> str:
    return orjson.dumps({"items": list(items)}).decode()


def test_the_request_asks_for_a_json_object_and_lists_known_items() -> None:
    request = build_extraction_request(
        model="cheap",
        user_message="I'm Ada, call me Ada.",
        assistant_reply="Hello Ada!",
        existing=[MemoryItem("m1", "preference", "prefers Python")],
        max_chars=200,
    )
    assert request.response_format == {"type": "json_object"}
    assert request.model == "cheap"
    assert '"items"' in request.messages[0]["content"]
    assert "[m1] (preference) prefers Python" in request.messages[1]["content"]
    assert "I'm Ada" in request.messages[1]["content"]


@pytest.mark.parametrize(
    "text",
    ["not json", "[]", '{"items": "nope"}', '{"items": [42, null]}', "", '{"other": []}'],
)
def test_malformed_answers_yield_nothing(text: str) -> None:
    assert parse_extraction(text, max_chars=100) == []


def test_items_are_validated_for_kind_and_length() -> None:
    text = answer(
        {"kind": "preference", "content": "  prefers   short answers "},
        {"kind": "opinion", "content": "likes cats"},
        {"kind": "fact", "content": "x" * 101},
        {"kind": "fact", "content": ""},
        {"kind": "fact", "content": 7},
        {"kind": "fact", "content": "works as a nurse", "replaces": "m2"},
    )
    assert parse_extraction(text, max_chars=100) == [
        Candidate("preference", "prefers short answers"),
        Candidate("fact", "works as a nurse", "m2"),
    ]


def test_a_fenced_json_answer_is_still_read() -> None:
    fenced = "```json\n" + answer({"kind": "fact", "content": "lives in Oslo"}) + "\n```"
    assert parse_extraction(fenced, max_chars=100) == [Candidate("fact", "lives in Oslo")]


def test_exact_and_near_duplicates_are_dropped() -> None:
    existing = [MemoryItem("m1", "preference", "Prefers answers in French.")]
    changes = reconcile(
        [
            Candidate("preference", "prefers answers in french"),
            Candidate("preference", "The user prefers answers in French"),
            Candidate("fact", "has a dog named Rex"),
            Candidate("fact", "Has a dog named Rex!"),
        ],
        existing,
    )
    assert changes.add == [Candidate("fact", "has a dog named Rex")]
    assert changes.replace == []


def test_a_changed_preference_replaces_the_old_one() -> None:
    existing = [
        MemoryItem("m1", "preference", "prefers Python"),
        MemoryItem("m2", "fact", "lives in Oslo"),
    ]
    changes = reconcile(
        [Candidate("preference", "prefers Rust"), Candidate("fact", "lives in Paris")], existing
    )
    assert changes.replace == [
        ("m1", Candidate("preference", "prefers Rust")),
        ("m2", Candidate("fact", "lives in Paris")),
    ]
    assert changes.add == []


def test_a_different_preference_with_the_same_verb_is_added_not_replaced() -> None:
    existing = [MemoryItem("m1", "preference", "prefers Python")]
    changes = reconcile([Candidate("preference", "prefers concise answers")], existing)
    assert changes.add == [Candidate("preference", "prefers concise answers")]


def test_the_model_can_name_the_item_it_replaces() -> None:
    existing = [MemoryItem("m1", "fact", "works at Acme as an engineer")]
    changes = reconcile([Candidate("fact", "now a manager at Initech", "m1")], existing)
    assert changes.replace == [("m1", Candidate("fact", "now a manager at Initech", "m1"))]


def test_items_the_user_wrote_are_never_replaced() -> None:
    existing = [MemoryItem("m1", "preference", "prefers Python", replaceable=False)]
    changes = reconcile([Candidate("preference", "prefers Rust", "m1")], existing)
    assert changes.replace == []
    assert changes.add == [Candidate("preference", "prefers Rust", "m1")]


async def test_extraction_calls_the_model_and_reconciles() -> None:
    seen: list[ChatRequest] = []

    async def complete(request: ChatRequest) -> str:
        seen.append(request)
        return answer({"kind": "preference", "content": "prefers Rust"})

    changes = await extract_memory(
        complete,
        model="cheap",
        user_message="I switched to Rust",
        assistant_reply="Nice",
        existing=[MemoryItem("m1", "preference", "prefers Python")],
        max_chars=200,
    )
    assert changes.replace == [("m1", Candidate("preference", "prefers Rust"))]
    assert seen[0].response_format == {"type": "json_object"}


async def test_a_failing_model_changes_nothing() -> None:
    async def complete(request: ChatRequest) -> str:
        raise Unavailable("model down")

    changes = await extract_memory(
        complete, model="m", user_message="u", assistant_reply="a", existing=[], max_chars=10
    )
    assert not changes
