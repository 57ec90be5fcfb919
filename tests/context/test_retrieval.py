from __future__ import annotations

import uuid

import httpx
from sqlalchemy import select, text
from sqlalchemy.dialects import postgresql

from db.models import Chunk
from db.repositories.retrieval import postgres_match
from llm.context import build_context
from rag.ranking import format_passages
from tests.conftest import TestUser, create_session, register_user
from tests.context.conftest import container_of_app

HANDBOOK = """# Staff handbook

## Holidays

Every employee gets twenty-seven days of paid holiday per year, plus public holidays.

## Equipment

Laptops are replaced every four years. Monitors are ordered through the facilities desk.
"""


async def post_message(
    client: httpx.AsyncClient, user: TestUser, session_id: str, content: str
) -> int:
    response = await client.post(
        f"/v1/sessions/{session_id}/messages",
        json={"content": content, "reply": "none"},
        headers=user.headers,
    )
    assert response.status_code == 201, response.text
    return int(response.json()["data"]["message"]["seq"])


async def test_a_fact_from_an_uploaded_document_is_found_by_a_questions_words(
    client: httpx.AsyncClient,
) -> None:
    user = await register_user(client)
    session_id = await create_session(client, user)
    await client.post(
        f"/v1/sessions/{session_id}/documents",
        json={"title": "Staff handbook", "content": HANDBOOK},
        headers=user.headers,
    )
    retriever = container_of_app(client).retriever

    passages = await retriever.retrieve(
        uuid.UUID(session_id), "How many holiday days do employees get?", budget_tokens=400
    )

    assert passages, "the holiday paragraph should be found"
    best = passages[0]
    assert "twenty-seven days" in best.text
    assert best.source_kind == "document" and best.title == "Staff handbook"
    assert "[document “Staff handbook”]" in format_passages(passages, 400)


async def test_retrieval_stays_inside_its_session(client: httpx.AsyncClient) -> None:
    user = await register_user(client)
    mine, other = await create_session(client, user), await create_session(client, user)
    await client.post(
        f"/v1/sessions/{other}/documents",
        json={"title": "Staff handbook", "content": HANDBOOK},
        headers=user.headers,
    )
    retriever = container_of_app(client).retriever

    passages = await retriever.retrieve(uuid.UUID(mine), "holiday days", budget_tokens=400)

    assert passages == []


async def test_a_question_of_only_stop_words_or_operators_finds_nothing_and_fails_nothing(
    client: httpx.AsyncClient,
) -> None:
    user = await register_user(client)
    session_id = await create_session(client, user)
    await client.post(
        f"/v1/sessions/{session_id}/documents",
        json={"title": "Staff handbook", "content": HANDBOOK},
        headers=user.headers,
    )
    retriever = container_of_app(client).retriever

    for question in ("what is it?", '"" OR NEAR( * ) -', ""):
        assert await retriever.retrieve(uuid.UUID(session_id), question, budget_tokens=400) == []


async def test_history_indexing_makes_an_old_message_retrievable_once(
    client: httpx.AsyncClient,
) -> None:
    user = await register_user(client)
    session_id = await create_session(client, user)
    old = await post_message(
        client, user, session_id, "The staging database password rotates on Fridays."
    )
    for n in range(3):
        await post_message(client, user, session_id, f"small talk number {n}")
    retriever = container_of_app(client).retriever
    sid = uuid.UUID(session_id)
    assert (
        await retriever.retrieve(sid, "when does the staging password rotate", budget_tokens=300)
        == []
    )

    indexed = await retriever.index_history(sid, up_to_seq=old + 1)
    again = await retriever.index_history(sid, up_to_seq=old + 1)

    assert (indexed, again) == (2, 0)
    passages = await retriever.retrieve(
        sid, "when does the staging password rotate", budget_tokens=300, exclude_after_seq=old + 1
    )
    assert [p.seq for p in passages] == [old]
    assert passages[0].source_kind == "history"
    assert "Fridays" in passages[0].text
    assert f"[earlier message #{old}]" in format_passages(passages, 300)


async def test_indexed_messages_after_the_cut_or_deleted_are_not_retrieved(
    client: httpx.AsyncClient,
) -> None:
    user = await register_user(client)
    session_id = await create_session(client, user)
    first = await post_message(client, user, session_id, "Kiwi harvest starts in May.")
    second = await post_message(client, user, session_id, "Kiwi exports go to Japan.")
    retriever = container_of_app(client).retriever
    sid = uuid.UUID(session_id)
    await retriever.index_history(sid, up_to_seq=second)

    cut = await retriever.retrieve(sid, "kiwi", budget_tokens=300, exclude_after_seq=first)
    assert [p.seq for p in cut] == [first]

    page = await client.get(f"/v1/sessions/{session_id}/messages", headers=user.headers)
    first_id = page.json()["data"]["messages"][0]["id"]
    await client.delete(f"/v1/sessions/{session_id}/messages/{first_id}", headers=user.headers)

    remaining = await retriever.retrieve(sid, "kiwi", budget_tokens=300)
    assert [p.seq for p in remaining] == [second]


async def test_retrieved_passages_fit_into_the_built_context(client: httpx.AsyncClient) -> None:
    user = await register_user(client)
    session_id = await create_session(client, user)
    await client.post(
        f"/v1/sessions/{session_id}/documents",
        json={"title": "Staff handbook", "content": HANDBOOK},
        headers=user.headers,
    )
    retriever = container_of_app(client).retriever
    question = "When are laptops replaced?"

    passages = await retriever.retrieve(uuid.UUID(session_id), question, budget_tokens=300)
    built = build_context(
        system_prompt="You are helpful.",
        memory_items=[],
        summary=None,
        passages_text=format_passages(passages, 300),
        search_text="",
        search_note=None,
        history_turns=[{"role": "user", "content": question}],
        window_tokens=4096,
        reply_reserve_tokens=512,
    )

    assert "every four years" in built.messages[0]["content"]


async def test_the_postgres_full_text_condition_matches_the_gin_expression_index(
    client: httpx.AsyncClient, backend: str
) -> None:
    if backend != "postgres":
        return  # SQLite's FTS5 table is the index itself
    statement = select(Chunk.id).where(postgres_match("holiday or days"))
    compiled = statement.compile(
        dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}
    )
    database = container_of_app(client).database
    async with database.transaction() as session:
        # On a tiny table a sequential scan is cheaper; forbid it to see whether the
        # condition can use the index at all (bench/retrieval.py checks the real plan
        # of the whole query on a large session).
        await session.execute(text("SET LOCAL enable_seqscan = off"))
        plan = (await session.execute(text(f"EXPLAIN {compiled}"))).scalars().all()

    assert any("ix_chunks_fts" in line for line in plan), "\n".join(plan)


async def test_the_offline_model_quotes_an_uploaded_markdown_file_that_opens_with_a_heading(
    client: httpx.AsyncClient,
) -> None:
    user = await register_user(client)
    session_id = await create_session(client, user)
    uploaded = await client.post(
        f"/v1/sessions/{session_id}/documents",
        files={"file": ("handbook.md", HANDBOOK.encode(), "text/markdown")},
        headers=user.headers,
    )
    assert uploaded.status_code == 201, uploaded.text

    asked = await client.post(
        f"/v1/sessions/{session_id}/messages",
        json={"content": "How many holiday days do employees get?"},
        headers={**user.headers, "Accept": "text/event-stream"},
    )
    assert asked.is_success, asked.text
    page = await client.get(f"/v1/sessions/{session_id}/messages", headers=user.headers)
    answer = next(m for m in page.json()["data"]["messages"] if m["role"] == "assistant")

    assert "Your documents say:" in answer["content"]
    assert "twenty-seven days" in answer["content"]
