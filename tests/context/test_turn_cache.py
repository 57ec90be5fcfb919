"""Each node's copy of recent turns starts answers without reading the history, and is
never trusted past the question's store: anything it missed makes the answer ask again.

The real app on a loopback port (two of them on one database where another node is
needed), a real WebSocket client, and the loopback fake OpenRouter; each test asserts
on the request the model finally answered and on what the room saw.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from db.repositories import messages as messages_repo
from db.repositories.messages import Turn, TurnHeader
from server.assistant.turn_cache import Snapshot, TurnCache
from tests.conftest import TestUser
from tests.context.answers import Answers, StartAnswers, stages
from tests.fakes.openrouter import fake_openrouter
from tests.wsclient import WSClient

__all__ = ["fake_openrouter"]


@pytest.fixture
def history_reads(monkeypatch: pytest.MonkeyPatch) -> list[uuid.UUID]:
    """Sessions whose recent turns were read from the database, in order."""
    reads: list[uuid.UUID] = []
    original = messages_repo.recent_turns

    async def counted(session: Any, session_id: uuid.UUID, *args: Any) -> list[Turn]:
        reads.append(session_id)
        return await original(session, session_id, *args)

    monkeypatch.setattr(messages_repo, "recent_turns", counted)
    return reads


async def post_on_another_node(
    start_answers: StartAnswers, user: TestUser, session_id: str, content: str
) -> None:
    """Store a message through a second app on the same database, with a bus of its
    own: this node does not hear of it."""
    async with start_answers() as other_node:
        posted = await other_node.http.post(
            f"/v1/sessions/{session_id}/messages",
            json={"content": content, "reply": "none"},
            headers=user.headers,
        )
        assert posted.status_code == 201, posted.text


async def upload_handbook(answers: Answers, user: TestUser, session_id: str) -> None:
    document = {"title": "Handbook", "content": "The Zorblax reactor runs at 451 kelvin."}
    uploaded = await answers.http.post(
        f"/v1/sessions/{session_id}/documents", json=document, headers=user.headers
    )
    assert uploaded.status_code == 201, uploaded.text


def contents(answers: Answers) -> list[str]:
    return [str(m["content"]) for m in answers.sent() if m["role"] != "system"]


def rereads(answers: Answers) -> float:
    counter = answers.server.container.metrics.context_rereads
    return float(counter._value.get())


async def test_a_follow_up_is_started_from_the_copy_with_the_whole_history(
    answers: Answers, history_reads: list[uuid.UUID]
) -> None:
    ada = await answers.user()
    session_id = await answers.session(ada)
    first = await answers.ask(ada, session_id, "My cat is called Tom.")
    reads_before = len(history_reads)  # the join's, and the first question's if it won

    await answers.ask(ada, session_id, "What is my cat called?")

    assert contents(answers) == ["My cat is called Tom.", first.text, "What is my cat called?"]
    assert len(history_reads) == reads_before >= 1
    assert len(answers.streamed_requests()) == 2
    assert rereads(answers) == 0


async def test_a_message_stored_by_another_node_is_in_the_answer(
    answers: Answers, start_answers: StartAnswers
) -> None:
    ada = await answers.user()
    session_id = await answers.session(ada)
    first = await answers.ask(ada, session_id, "Remember the colour blue.")
    await post_on_another_node(start_answers, ada, session_id, "Also remember green.")

    streamed = await answers.ask(ada, session_id, "Which colours?")

    assert contents(answers) == [
        "Remember the colour blue.",
        first.text,
        "Also remember green.",
        "Which colours?",
    ]
    # The copy missed "green": its request was dropped before any token reached the
    # room, and the answer asked again on the history as stored.
    assert rereads(answers) == 1
    assert len(answers.streamed_requests()) == 3
    client = answers.sockets[ada.id]
    assert [f["type"] for f in client.seen].count("stream.start") == 2
    assert streamed.end is not None and streamed.end["message"]["content"] == streamed.text
    assert [d["index"] for d in streamed.deltas] == list(range(len(streamed.deltas)))


async def test_an_answer_asked_again_announces_its_stages_once(
    answers: Answers, start_answers: StartAnswers
) -> None:
    ada = await answers.user()
    session_id = await answers.session(ada)
    await upload_handbook(answers, ada, session_id)
    await answers.ask(ada, session_id, "Hello.")
    await post_on_another_node(start_answers, ada, session_id, "Unrelated.")

    streamed = await answers.ask(ada, session_id, "How hot does the Zorblax reactor run?")

    assert rereads(answers) == 1
    assert stages(streamed) == ["retrieving", "generating"]
    assert "451 kelvin" in answers.system()


async def test_a_deleted_message_leaves_the_next_request(answers: Answers) -> None:
    ada = await answers.user()
    session_id = await answers.session(ada)
    await answers.ask(ada, session_id, "The secret word is pelican.")
    history = await answers.http.get(f"/v1/sessions/{session_id}/messages", headers=ada.headers)
    question = history.json()["data"]["messages"][0]
    deleted = await answers.http.delete(
        f"/v1/sessions/{session_id}/messages/{question['id']}", headers=ada.headers
    )
    assert deleted.status_code in (200, 204), deleted.text

    await answers.ask(ada, session_id, "What was the secret word?")

    assert not any("pelican" in text for text in contents(answers))
    assert rereads(answers) == 1


async def test_a_new_system_prompt_reaches_the_next_request(answers: Answers) -> None:
    ada = await answers.user()
    session_id = await answers.session(ada)
    await answers.ask(ada, session_id, "Hello.")
    patched = await answers.http.patch(
        f"/v1/sessions/{session_id}",
        json={"system_prompt": "Answer like a pirate."},
        headers=ada.headers,
    )
    assert patched.status_code == 200, patched.text

    await answers.ask(ada, session_id, "Hello again.")

    assert answers.system().startswith("Answer like a pirate.")


async def test_a_document_uploaded_after_the_copy_was_made_is_retrieved(
    answers: Answers,
) -> None:
    ada = await answers.user()
    session_id = await answers.session(ada)
    await answers.ask(ada, session_id, "Hello.")  # the copy: nothing to retrieve from
    await upload_handbook(answers, ada, session_id)

    await answers.ask(ada, session_id, "How hot does the Zorblax reactor run?")

    assert "451 kelvin" in answers.system()


async def test_after_a_refusal_a_closed_session_asks_no_model(answers: Answers) -> None:
    ada = await answers.user()
    session_id = await answers.session(ada)
    await answers.ask(ada, session_id, "Hello.")
    closed = await answers.http.post(f"/v1/sessions/{session_id}/close", headers=ada.headers)
    assert closed.status_code == 200, closed.text
    client = answers.sockets[ada.id]
    frame = {"type": "message", "session_id": session_id, "content": "still there?"}

    refused = await client.request(frame)
    asked = len(answers.streamed_requests())
    refused_again = await client.request(frame)

    assert (refused["type"], refused["code"]) == ("error", "conflict")
    assert (refused_again["type"], refused_again["code"]) == ("error", "conflict")
    assert len(answers.streamed_requests()) == asked
    assert [f["type"] for f in client.seen].count("stream.start") == 1


# The copy itself -------------------------------------------------------------------


def header(last_seq: int, revision: int = 0) -> TurnHeader:
    return TurnHeader(None, None, "active", None, None, False, False, last_seq, revision)


def turn(seq: int, content: str = "x", key: str | None = None) -> Turn:
    return Turn(uuid.uuid4(), seq, "user", content, key)


SESSION, ADA, BOB = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()


def test_a_snapshot_fits_only_the_question_right_after_it_under_its_revision() -> None:
    snapshot = Snapshot(header(last_seq=4, revision=2), (turn(3), turn(4)))

    assert snapshot.fits(5, 2)  # read before the question was stored
    assert snapshot.fits(4, 2)  # read after it: the question is skipped by id
    assert not snapshot.fits(6, 2)  # a message came in between
    assert not snapshot.fits(3, 2)  # the read saw a message after the question
    assert not snapshot.fits(5, 3)  # something changed besides appends


def test_the_copy_follows_appends_and_drops_what_it_cannot_vouch_for() -> None:
    cache = TurnCache(window=3, max_bytes=10_000)
    cache.put(SESSION, Snapshot(header(2), (turn(1), turn(2))), ADA)

    cache.appended(SESSION, turn(3, "q", key="k"), 0, BOB)
    cache.appended(SESSION, turn(4), 0, None)
    held = cache.get(SESSION, BOB)
    assert held is not None and [t.seq for t in held.turns] == [2, 3, 4]  # the window
    assert held.header.last_seq == 4 and held.holds_key("k", uuid.uuid4())
    assert cache.get(SESSION, uuid.uuid4()) is None  # never seen in this session

    cache.appended(SESSION, turn(6), 0, ADA)  # 5 was stored elsewhere
    assert cache.get(SESSION, ADA) is None

    cache.put(SESSION, Snapshot(header(6), (turn(6),)), ADA)
    cache.appended(SESSION, turn(7), 1, ADA)  # stored under a newer revision
    assert cache.get(SESSION, ADA) is None


def test_a_slower_read_does_not_replace_a_newer_copy() -> None:
    cache = TurnCache(window=10, max_bytes=10_000)
    cache.put(SESSION, Snapshot(header(5, revision=1), (turn(5),)), ADA)

    cache.put(SESSION, Snapshot(header(3, revision=1), (turn(3),)), BOB)

    held = cache.get(SESSION, BOB)
    assert held is not None and held.header.last_seq == 5


def test_the_copy_is_bounded_in_size_least_recently_used_first() -> None:
    # Each turn costs its text plus a fixed allowance for the objects holding it.
    cache = TurnCache(window=10, max_bytes=250, turn_overhead=100)
    first, second, third = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    cache.put(first, Snapshot(header(1), (turn(1, "a" * 10),)), ADA)
    cache.put(second, Snapshot(header(1), (turn(1, "b" * 10),)), ADA)
    assert cache.get(first, ADA) is not None  # now the most recently used

    cache.put(third, Snapshot(header(1), (turn(1, "c" * 10),)), ADA)

    assert cache.get(second, ADA) is None
    assert cache.get(first, ADA) is not None and cache.get(third, ADA) is not None
    assert cache.size == 220 and len(cache) == 2


def test_a_zero_budget_keeps_nothing() -> None:
    cache = TurnCache(window=10, max_bytes=0)
    cache.put(SESSION, Snapshot(header(1), (turn(1),)), ADA)
    assert cache.get(SESSION, ADA) is None and len(cache) == 0


def test_a_message_heard_from_another_node_extends_the_copy_under_its_own_revision() -> None:
    cache = TurnCache(window=10, max_bytes=10_000)
    cache.put(SESSION, Snapshot(header(2, revision=4), (turn(2),)), ADA)
    assert not cache.expects(SESSION, 2) and not cache.expects(uuid.uuid4(), 3)
    assert cache.expects(SESSION, 3)

    cache.appended(SESSION, turn(3), None, None)

    held = cache.get(SESSION, ADA)
    assert held is not None and held.header.last_seq == 3
    assert held.header.history_revision == 4  # the next store checks it
    assert not held.fits(4, 5) and held.fits(4, 4)


async def test_a_member_who_joins_has_their_first_question_start_from_the_copy(
    answers: Answers, history_reads: list[uuid.UUID]
) -> None:
    ada = await answers.user()
    session_id = await answers.session(ada)
    client, _ = await WSClient.connect(answers.server.ws_url, ada.access_token)
    answers.sockets[ada.id] = client
    await client.request({"type": "join", "session_id": session_id})
    answers.joined.add((ada.id, session_id))
    for _ in range(100):  # the join reads the history in the background
        if history_reads:
            break
        await asyncio.sleep(0.02)
    # The read has started; the copy holds the session once it is done.
    await asyncio.gather(*answers.server.container.assistant._background)
    assert history_reads == [uuid.UUID(session_id)]  # read on joining, before any question

    await answers.ask(ada, session_id, "First question.")

    assert history_reads == [uuid.UUID(session_id)]  # the join's read only
    assert contents(answers) == ["First question."]
    assert rereads(answers) == 0


def test_a_message_after_a_gap_drops_the_copy_without_being_read() -> None:
    cache = TurnCache(window=10, max_bytes=10_000)
    cache.put(SESSION, Snapshot(header(2), (turn(2),)), ADA)

    assert not cache.expects(SESSION, 4)  # 3 was stored where this node did not hear it

    assert cache.get(SESSION, ADA) is None
