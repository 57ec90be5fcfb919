"""Memory, web search, documents and summarised history reaching the model's request.

The real app on a loopback port, a real WebSocket client, and loopback fakes of
OpenRouter and Tavily: each test asserts on the request body the fake received.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest

from db.repositories import messages as messages_repo
from tests.context.answers import MODEL, Answers, StartAnswers, details, stages
from tests.fakes.embeddings import API_KEY as EMBEDDINGS_KEY
from tests.fakes.embeddings import FakeEmbeddings, fake_embeddings
from tests.fakes.openrouter import Stream, fake_openrouter

__all__ = ["fake_embeddings", "fake_openrouter"]


async def test_a_preference_set_over_rest_reaches_the_model_in_a_new_session(
    answers: Answers,
) -> None:
    ada = await answers.user()
    response = await answers.http.post(
        "/v1/me/memory",
        json={"content": "prefers answers in French", "kind": "preference"},
        headers=ada.headers,
    )
    assert response.status_code == 201, response.text

    await answers.ask(ada, await answers.session(ada), "Hello there")

    assert "prefers answers in French" in answers.system()


async def test_erasing_memory_removes_it_from_the_next_request(answers: Answers) -> None:
    ada = await answers.user()
    await answers.http.post(
        "/v1/me/memory", json={"content": "lives in Oslo", "kind": "fact"}, headers=ada.headers
    )
    session_id = await answers.session(ada)
    await answers.ask(ada, session_id, "Hello there")
    assert "lives in Oslo" in answers.system()

    response = await answers.http.delete("/v1/me/memory", headers=ada.headers)
    assert response.status_code == 200
    await answers.ask(ada, session_id, "Hello again")

    assert "lives in Oslo" not in answers.system()


async def test_a_fact_learned_in_one_session_reaches_the_model_in_another(
    answers: Answers,
) -> None:
    ada = await answers.user()
    learned = {"items": [{"kind": "fact", "content": "works as a nurse in Leeds"}]}
    # The turn's streamed answer, then the extraction call's whole answer.
    answers.fake.enqueue(Stream(["Nice ", "to ", "meet ", "you."]))
    answers.fake.enqueue(Stream([orjson.dumps(learned).decode()]))

    await answers.ask(ada, await answers.session(ada), "I work as a nurse in Leeds.")
    extraction = answers.fake.chat_requests[-1].json or {}
    await answers.ask(ada, await answers.session(ada), "What do you know about me?")

    assert extraction.get("response_format") == {"type": "json_object"}
    assert "I work as a nurse in Leeds." in extraction["messages"][-1]["content"]
    assert "works as a nurse in Leeds" in answers.system()
    items = (await answers.http.get("/v1/me/memory", headers=ada.headers)).json()["data"]
    assert [(i["content"], i["source"]) for i in items["items"]] == [
        ("works as a nurse in Leeds", "learned")
    ]


async def test_a_question_with_nothing_about_the_user_asks_no_extraction(
    answers: Answers,
) -> None:
    ada = await answers.user()

    await answers.ask(ada, await answers.session(ada), "What is the capital of Peru?")

    assert len(answers.fake.chat_requests) == 1


async def test_a_forced_search_puts_titles_and_urls_in_the_request(answers: Answers) -> None:
    ada = await answers.user()

    streamed = await answers.ask(
        ada, await answers.session(ada), "parley release notes", search=True
    )

    system = answers.system()
    assert "Result 1 about parley release notes" in system
    assert "https://example.org/parley-release-notes/1" in system
    assert "searching" in stages(streamed)
    # Nothing to retrieve from (no documents, nothing summarised): no retrieval step.
    assert "retrieving" not in stages(streamed)
    assert stages(streamed)[-1] == "generating"
    assert answers.tavily.requests[0].body["query"] == "parley release notes"


async def test_the_same_search_twice_is_served_from_the_cache(answers: Answers) -> None:
    ada = await answers.user()
    session_id = await answers.session(ada)

    await answers.ask(ada, session_id, "parley release notes", search=True)
    await answers.ask(ada, session_id, "parley release notes", search=True)

    assert len(answers.tavily.requests) == 1
    assert "https://example.org/parley-release-notes/1" in answers.system()


async def test_a_message_with_a_search_cue_searches_for_a_model_without_tools(
    answers: Answers,
) -> None:
    ada = await answers.user()
    session_id = await answers.session(ada)

    await answers.ask(ada, session_id, "What is the capital of Peru?")
    assert answers.tavily.requests == []
    await answers.ask(ada, session_id, "latest news about parley")

    assert len(answers.tavily.requests) == 1
    assert "Result 1 about latest news about parley" in answers.system()


@pytest.mark.parametrize("mode", ["down", "rate_limited"])
async def test_with_tavily_failing_the_answer_still_comes_and_says_search_was_unavailable(
    answers: Answers, mode: str
) -> None:
    answers.tavily.mode = mode
    ada = await answers.user()

    streamed = await answers.ask(
        ada, await answers.session(ada), "parley release notes", search=True
    )

    assert streamed.end is not None and streamed.end["finish_reason"] == "stop"
    assert streamed.text == "Hello from the fake."
    assert any("web search unavailable" in detail for detail in details(streamed))
    assert "web search was attempted" in answers.system()


async def test_a_tool_calling_model_searches_when_it_calls_the_tool(answers: Answers) -> None:
    answers.fake.tool_models = {MODEL}  # the catalogue lists tools and tool_choice
    await answers.server.container.llm.provider().catalog.refresh()
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "web_search", "arguments": '{"query": "parley release"}'},
    }
    answers.fake.enqueue(
        Stream([], tool_calls=[call], finish_reason="tool_calls"), Stream(["It ", "shipped."])
    )
    ada = await answers.user()

    streamed = await answers.ask(ada, await answers.session(ada), "When did Parley ship?")

    first, second = (r.json or {} for r in answers.streamed_requests())
    assert [t["function"]["name"] for t in first["tools"]] == ["web_search"]
    assert "tool_choice" not in first and second["tool_choice"] == "none"
    assert second["messages"][-2]["tool_calls"][0]["id"] == "call_1"
    tool = second["messages"][-1]
    assert tool["role"] == "tool" and tool["tool_call_id"] == "call_1"
    assert "Result 1 about parley release" in tool["content"]
    assert "https://example.org/parley-release/1" in tool["content"]
    assert streamed.text == "It shipped."
    assert streamed.end is not None and streamed.end["message"]["content"] == "It shipped."
    assert "searching" in stages(streamed)
    assert answers.tavily.requests[0].body["query"] == "parley release"


async def test_a_model_that_calls_the_tool_again_gets_one_round_and_its_text_is_kept(
    answers: Answers,
) -> None:
    answers.server.container.context.tool_models = {MODEL}

    def call(n: int) -> dict[str, Any]:
        arguments = orjson.dumps({"query": f"parley {n}"}).decode()
        return {
            "id": f"call_{n}",
            "type": "function",
            "function": {"name": "web_search", "arguments": arguments},
        }

    answers.fake.enqueue(
        Stream([], tool_calls=[call(1)], finish_reason="tool_calls"),
        Stream(["Found ", "it."], tool_calls=[call(2)], finish_reason="tool_calls"),
    )
    ada = await answers.user()

    streamed = await answers.ask(ada, await answers.session(ada), "Did Parley ship?")

    assert len(answers.streamed_requests()) == 2
    assert [r.body["query"] for r in answers.tavily.requests] == ["parley 1"]
    assert streamed.end is not None and streamed.end["message"]["content"] == "Found it."


async def test_a_tool_calling_model_is_not_searched_for_by_the_rule(answers: Answers) -> None:
    answers.server.container.context.tool_models = {MODEL}
    ada = await answers.user()

    await answers.ask(ada, await answers.session(ada), "latest news about parley")

    assert answers.tavily.requests == []
    assert answers.streamed_requests()[-1].json["tools"][0]["function"]["name"] == "web_search"


async def test_a_fact_from_an_uploaded_document_reaches_the_request(answers: Answers) -> None:
    ada = await answers.user()
    session_id = await answers.session(ada)
    document = {
        "title": "Reactor handbook",
        "content": "# Zorblax reactor\n\nThe Zorblax reactor runs at 451 kelvin in winter.",
    }
    response = await answers.http.post(
        f"/v1/sessions/{session_id}/documents", json=document, headers=ada.headers
    )
    assert response.status_code == 201, response.text

    streamed = await answers.ask(ada, session_id, "How hot does the Zorblax reactor run?")

    assert "451 kelvin" in answers.system()
    assert "Reactor handbook" in answers.system()
    assert "retrieving" in stages(streamed)


async def test_a_fact_from_a_summarised_turn_reaches_the_request_when_asked_about(
    start_answers: StartAnswers,
) -> None:
    filler = " ".join(["the garden path wound past old stone walls and quiet hedges"] * 10)
    async with start_answers(llm_context_length=1024, llm_reply_reserve_tokens=128) as answers:
        ada = await answers.user()
        session_id = await answers.session(ada)
        await answers.ask(ada, session_id, "Remember this: my cat is called Zanzibar.")
        folded = False
        for turn in range(12):
            streamed = await answers.ask(ada, session_id, f"Turn {turn}: {filler}")
            if "summarising" in stages(streamed):
                folded = True
                break
        assert folded, "the conversation never outgrew the window"

        await answers.ask(ada, session_id, "What is the name of my cat?")

        database = answers.server.container.database
        async with database.transaction() as session:
            summary = await messages_repo.latest_summary(session, uuid.UUID(session_id))
    # The fake summarises every fold as its canned reply, so the fact survives only
    # in the indexed history that retrieval brings back.
    assert summary is not None and "Zanzibar" not in summary.content
    assert all("Zanzibar" not in m["content"] for m in answers.sent()[1:])
    assert "my cat is called Zanzibar" in answers.system()


PARKING = """# Parking

The automobile stays in the east garage overnight; the key hangs by the door.
"""
FILLER = "# Canteen\n\nLunch is served from noon. The soup changes every weekday.\n"


@pytest.mark.parametrize("semantic", [True, False], ids=["with-embeddings", "full-text-only"])
async def test_semantic_retrieval_finds_a_passage_that_shares_no_word_with_the_question(
    start_answers: StartAnswers, fake_embeddings: FakeEmbeddings, semantic: bool
) -> None:
    overrides = (
        {
            "embeddings_url": fake_embeddings.base_url,
            "embeddings_api_key": EMBEDDINGS_KEY,
            "embeddings_model": "fake-embed-1",
        }
        if semantic
        else {}
    )
    async with start_answers(**overrides) as answers:
        ada = await answers.user()
        session_id = await answers.session(ada)
        for title, content in (("Parking", PARKING), ("Canteen", FILLER)):
            response = await answers.http.post(
                f"/v1/sessions/{session_id}/documents",
                json={"title": title, "content": content},
                headers=ada.headers,
            )
            assert response.status_code == 201, response.text

        await answers.ask(ada, session_id, "Where do we keep the car?")

        found = "east garage" in answers.system()
    # "car" is not in the document: only the embeddings (car ~ automobile) find it.
    assert found is semantic
    if semantic:
        inputs = [text for body in fake_embeddings.requests for text in body["input"]]
        assert "Where do we keep the car?" in inputs
        assert any("automobile" in text for text in inputs)
        assert {body["model"] for body in fake_embeddings.requests} == {"fake-embed-1"}
