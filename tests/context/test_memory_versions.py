"""Memory follows the version shown (issue 16, item 4): what was learned from a
question or its answer goes when another version of that exchange is shown, and the
exchange now shown is learned from instead. What the user typed in stays.

The real app on a loopback port, a real WebSocket client for the answers, REST for the
version changes, and the loopback OpenRouter fake answering the extraction calls.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson

from memory.extraction import Candidate, MemoryChanges
from server.services.memory import LearnedFrom
from tests.conftest import TestUser
from tests.context.answers import Answers
from tests.fakes.openrouter import Stream, fake_openrouter
from tests.stream.conftest import Streamed, collect_stream

__all__ = ["fake_openrouter"]

DOG = "has a dog named Rex"
CAT = "has a cat named Tom"


def learned(content: str) -> Stream:
    """The extraction call's whole answer: one fact."""
    return Stream([orjson.dumps({"items": [{"kind": "fact", "content": content}]}).decode()])


async def memory_of(answers: Answers, user: TestUser) -> list[tuple[str, str]]:
    response = await answers.http.get("/v1/me/memory", headers=user.headers)
    assert response.status_code == 200, response.text
    return [(i["content"], i["source"]) for i in response.json()["data"]["items"]]


async def background_done(answers: Answers) -> None:
    await asyncio.gather(*list(answers.server.container.assistant._background))


async def answered(answers: Answers, user: TestUser, reply: dict[str, Any]) -> Streamed:
    """The stream a version change started, through its end and what it set off."""
    stream_id = reply["data"]["stream_id"]
    streamed = await collect_stream(answers.sockets[user.id], stream_id, timeout=15)
    await answers.settled(stream_id)
    return streamed


def extraction_exchange(answers: Answers) -> str:
    request = answers.fake.chat_requests[-1].json or {}
    assert request.get("response_format") == {"type": "json_object"}
    return str(request["messages"][-1]["content"])


async def test_memory_follows_the_version_of_the_question_shown(answers: Answers) -> None:
    ada = await answers.user()
    manual = await answers.http.post(
        "/v1/me/memory", json={"content": "likes green tea", "kind": "fact"}, headers=ada.headers
    )
    assert manual.status_code == 201
    session_id = await answers.session(ada)
    base = f"/v1/sessions/{session_id}/messages"

    answers.fake.enqueue(Stream(["Lovely."]), learned(DOG))
    first = await answers.ask(ada, session_id, "I have a dog named Rex.")
    assert first.end is not None
    question_id = first.end["message"]["reply_to"]
    answer_id = first.end["message"]["id"]
    assert await memory_of(answers, ada) == [("likes green tea", "user"), (DOG, "learned")]

    # The question edited: its new answer, then the extraction of the new exchange.
    answers.fake.enqueue(Stream(["Nice cat."]), learned(CAT))
    edited = await answers.http.patch(
        f"{base}/{question_id}", json={"content": "I have a cat named Tom."}, headers=ada.headers
    )
    assert edited.status_code == 200, edited.text
    second = await answered(answers, ada, edited.json())
    assert second.end is not None and second.end["message"]["content"] == "Nice cat."

    exchange = extraction_exchange(answers)
    assert "I have a cat named Tom." in exchange and "Nice cat." in exchange
    assert DOG not in exchange  # forgotten with the edit, before the new answer
    assert await memory_of(answers, ada) == [("likes green tea", "user"), (CAT, "learned")]
    # The prompt's view follows too (its cache was dropped).
    memory = answers.server.container.memory
    assert await memory.context_items(uuid.UUID(ada.id)) == [
        "(fact) likes green tea",
        f"(fact) {CAT}",
    ]

    # Back to the first version: its answer is shown again, and learned from again.
    answers.fake.enqueue(learned(DOG))
    switched = await answers.http.put(
        f"{base}/{question_id}/version", json={"version": 1}, headers=ada.headers
    )
    assert switched.status_code == 200, switched.text
    await background_done(answers)

    exchange = extraction_exchange(answers)
    assert "I have a dog named Rex." in exchange and "Lovely." in exchange
    assert await memory_of(answers, ada) == [("likes green tea", "user"), (DOG, "learned")]
    assert f"(fact) {CAT}" not in await memory.context_items(uuid.UUID(ada.id))

    # An extraction that finishes after its exchange stopped being shown keeps nothing.
    late = LearnedFrom(
        uuid.UUID(question_id),
        ((uuid.UUID(question_id), 2), (uuid.UUID(answer_id), 2)),
    )
    changes = MemoryChanges(add=[Candidate("fact", CAT)])
    assert await memory.apply_changes(uuid.UUID(ada.id), changes, late) == 0
    assert await memory_of(answers, ada) == [("likes green tea", "user"), (DOG, "learned")]


async def test_a_regenerated_answer_is_learned_from_in_place_of_the_old_one(
    answers: Answers,
) -> None:
    ada = await answers.user()
    session_id = await answers.session(ada)
    base = f"/v1/sessions/{session_id}/messages"

    answers.fake.enqueue(Stream(["A dog!"]), learned(DOG))
    first = await answers.ask(ada, session_id, "I have a pet named Rex.")
    assert first.end is not None
    answer_id = first.end["message"]["id"]
    assert await memory_of(answers, ada) == [(DOG, "learned")]

    answers.fake.enqueue(Stream(["A cat!"]), learned(CAT))
    regenerated = await answers.http.post(f"{base}/{answer_id}/regenerate", headers=ada.headers)
    assert regenerated.status_code == 202, regenerated.text
    await answered(answers, ada, regenerated.json())

    assert DOG not in extraction_exchange(answers)
    assert await memory_of(answers, ada) == [(CAT, "learned")]

    # The first answer shown again: learned from again.
    answers.fake.enqueue(learned(DOG))
    switched = await answers.http.put(
        f"{base}/{answer_id}/version", json={"version": 1}, headers=ada.headers
    )
    assert switched.status_code == 200, switched.text
    await background_done(answers)

    assert "A dog!" in extraction_exchange(answers)
    assert await memory_of(answers, ada) == [(DOG, "learned")]


async def test_what_another_members_regeneration_teaches_is_about_the_asker(
    answers: Answers,
) -> None:
    ada, bob = await answers.user("Ada"), await answers.user("Bob")
    session_id = await answers.session(ada)
    added = await answers.http.post(
        f"/v1/sessions/{session_id}/members", json={"user_id": bob.id}, headers=ada.headers
    )
    assert added.status_code == 201, added.text
    base = f"/v1/sessions/{session_id}/messages"

    answers.fake.enqueue(Stream(["A dog!"]), learned(DOG))
    first = await answers.ask(ada, session_id, "I have a pet named Rex.")
    assert first.end is not None

    answers.fake.enqueue(Stream(["A cat!"]), learned(CAT))
    regenerated = await answers.http.post(
        f"{base}/{first.end['message']['id']}/regenerate", headers=bob.headers
    )
    assert regenerated.status_code == 202, regenerated.text
    await answered(answers, ada, regenerated.json())

    assert await memory_of(answers, ada) == [(CAT, "learned")]
    assert await memory_of(answers, bob) == []
