"""Budgets on a live app with real clients: refused before the upstream is asked,
``max_tokens`` lowered to what is left, concurrent answers capped, warnings."""

from __future__ import annotations

from typing import Any

import pytest

from llm.tokens import count_messages
from server.services import budgets as budgets_module
from tests.budgets.conftest import after_one_answer, make_admin, usage
from tests.context.answers import Answers, StartAnswers
from tests.fakes.openrouter import Stream
from tests.services import require_redis
from tests.wsclient import WSClient

LOTS = 1_000_000


async def set_budget(answers: Answers, admin: Any, user: Any, **fields: Any) -> dict[str, Any]:
    response = await answers.http.patch(
        f"/v1/users/{user.id}/budget", json=fields, headers=admin.headers
    )
    assert response.status_code == 200, response.text
    return response.json()["data"]  # type: ignore[no-any-return]


async def test_a_user_at_the_limit_is_refused_before_any_upstream_request(
    start_answers: StartAnswers,
) -> None:
    async with start_answers(budget_tokens_per_period=LOTS) as answers:
        admin, ada, session_id, budget = await after_one_answer(answers)
        used = budget["tokens"]["used"]
        assert used > 0
        await set_budget(answers, admin, ada, tokens_per_period=used)
        asked = len(answers.fake.chat_requests)

        refused = await answers.sockets[ada.id].request(
            {"type": "message", "session_id": session_id, "content": "And of Chile?"}
        )
        over_rest = await answers.http.post(
            f"/v1/sessions/{session_id}/messages",
            json={"content": "And of Chile?"},
            headers=ada.headers,
        )
        report = await usage(answers, ada)
        metrics = (await answers.http.get("/metrics")).text

    assert refused["type"] == "error" and refused["code"] == "budget_exceeded"
    assert refused["resets_at"] == report["budget"]["resets_at"]
    assert 0 < refused["retry_after"] <= 24 * 3600
    assert over_rest.status_code == 429
    assert over_rest.json()["error"]["code"] == "budget_exceeded"
    assert len(answers.fake.chat_requests) == asked  # the model was never asked
    assert report["budget"]["exhausted"] is True and report["budget"]["tokens"]["left"] == 0
    assert 'parley_budget_refusals_total{reason="spent"} 2.0' in metrics


async def test_max_tokens_is_lowered_to_what_is_left(start_answers: StartAnswers) -> None:
    async with start_answers(budget_tokens_per_period=LOTS) as answers:
        admin, ada, session_id, budget = await after_one_answer(answers)
        used = budget["tokens"]["used"]
        await set_budget(answers, admin, ada, tokens_per_period=used + 400)

        await answers.ask(ada, session_id, "And of Chile?")

    first, second = (r.json or {} for r in answers.streamed_requests())
    assert first["max_tokens"] == 1024  # LLM_REPLY_RESERVE_TOKENS: nothing to lower
    assert second["max_tokens"] == 400 - count_messages(second["messages"])


async def test_a_request_whose_prompt_would_overrun_the_budget_is_refused(
    start_answers: StartAnswers,
) -> None:
    async with start_answers(budget_tokens_per_period=20) as answers:
        ada = await answers.user()
        session_id = await answers.session(ada)
        streamed = await answers.ask(ada, session_id, "What is the capital of Peru?")

    assert streamed.end is not None
    assert streamed.end["error"]["code"] == "budget_exceeded"
    assert answers.fake.chat_requests == []


async def test_concurrent_answers_per_user_are_capped(start_answers: StartAnswers) -> None:
    async with start_answers(max_concurrent_answers=1) as answers:
        ada = await answers.user()
        session_id = await answers.session(ada)
        answers.fake.enqueue(Stream(["slow "] * 20, delay_s=0.05))
        client, _ = await WSClient.connect(answers.server.ws_url, ada.access_token)
        answers.sockets[ada.id] = client
        await client.request({"type": "join", "session_id": session_id})
        first = await client.request(
            {"type": "message", "session_id": session_id, "content": "Tell me a long story"}
        )
        second = await client.request(
            {"type": "message", "session_id": session_id, "content": "And another one"}
        )
        await answers.settled(first["stream_id"])
        third = await client.request(
            {"type": "message", "session_id": session_id, "content": "Now another one"}
        )
        await answers.settled(third["stream_id"])
        metrics = (await answers.http.get("/metrics")).text

    assert first["type"] == "ack" and third["type"] == "ack"
    assert second["type"] == "error" and second["code"] == "too_many_answers"
    assert len(answers.streamed_requests()) == 2  # the refused one never went out
    assert 'parley_budget_refusals_total{reason="concurrency"} 1.0' in metrics


async def test_the_welcome_frame_and_the_budget_frames_tell_what_is_left(
    start_answers: StartAnswers,
) -> None:
    async with start_answers(budget_tokens_per_period=LOTS) as answers:
        admin, ada = await make_admin(answers), await answers.user()
        session_id = await answers.session(ada)
        unlimited, admins_welcome = await WSClient.connect(
            answers.server.ws_url, admin.access_token
        )
        await unlimited.close()
        await answers.ask(ada, session_id, "What is the capital of Peru?")
        used = (await usage(answers, ada))["budget"]["tokens"]["used"]
        # The next answer takes it past 80 %, the one after that spends it.
        await set_budget(answers, admin, ada, tokens_per_period=used + 400)
        _, welcome = await WSClient.connect(answers.server.ws_url, ada.access_token)
        client = answers.sockets[ada.id]
        answers.fake.enqueue(Stream(["word "] * 400))
        await answers.ask(ada, session_id, "Tell me a long story")
        await answers.server.container.budgets.flush()
        warning = await client.next("budget", timeout=5)

    assert welcome["budget"]["tokens"] == {"limit": used + 400, "used": used, "left": 400}
    assert welcome["budget"]["period"] == "day" and welcome["budget"]["exhausted"] is False
    assert admins_welcome["budget"]["tokens"]["limit"] == LOTS  # the default
    assert warning["level"] in ("warning", "exhausted")
    assert warning["budget"]["tokens"]["used"] >= 0.8 * (used + 400)


async def test_budget_frames_warn_once_at_80_percent_and_once_when_spent(
    start_answers: StartAnswers,
) -> None:
    async with start_answers(budget_tokens_per_period=LOTS) as answers:
        admin, ada, session_id, budget = await after_one_answer(answers)
        used = budget["tokens"]["used"]
        await set_budget(answers, admin, ada, tokens_per_period=used + 1000)
        client = answers.sockets[ada.id]
        answers.fake.enqueue(Stream(["word "] * 750), Stream(["word "] * 200))

        await answers.ask(ada, session_id, "Tell me a long story")
        await answers.server.container.budgets.flush()
        warning = await client.next("budget", timeout=5)
        # In a new room: the long story in the history would overrun what is left.
        await answers.ask(ada, await answers.session(ada), "Tell me another one")
        await answers.server.container.budgets.flush()
        exhausted = await client.next("budget", timeout=5)
        refused = await client.request(
            {"type": "message", "session_id": session_id, "content": "One more?"}
        )

    assert warning["level"] == "warning" and not warning["budget"]["exhausted"]
    assert exhausted["level"] == "exhausted" and exhausted["budget"]["tokens"]["left"] == 0
    assert refused["code"] == "budget_exceeded"
    assert client.unread("budget") == []


async def test_with_budget_payer_owner_the_rooms_owner_pays_for_every_member(
    start_answers: StartAnswers,
) -> None:
    async with start_answers(budget_payer="owner", budget_tokens_per_period=LOTS) as answers:
        admin, ada, bob = await make_admin(answers), await answers.user(), await answers.user("Bob")
        adas_room = await answers.session(ada)
        added = await answers.http.post(
            f"/v1/sessions/{adas_room}/members", json={"user_id": bob.id}, headers=ada.headers
        )
        assert added.status_code in (200, 201), added.text
        await answers.ask(bob, adas_room, "What is the capital of Peru?")
        adas = (await usage(answers, ada))["budget"]["tokens"]["used"]
        bobs = (await usage(answers, bob))["budget"]["tokens"]["used"]
        await set_budget(answers, admin, ada, tokens_per_period=adas)
        asked = len(answers.fake.chat_requests)

        refused = await answers.sockets[bob.id].request(
            {"type": "message", "session_id": adas_room, "content": "And of Chile?"}
        )
        refused_asked = len(answers.fake.chat_requests)
        in_his_own_room = await answers.ask(bob, await answers.session(bob), "And of Chile?")

    assert adas > 0 and bobs == 0
    assert refused["code"] == "budget_exceeded"
    assert "the room owner's budget" in refused["message"]
    assert refused_asked == asked
    assert in_his_own_room.end is not None and "error" not in in_his_own_room.end


async def test_the_cap_on_concurrent_answers_holds_across_nodes(
    start_answers: StartAnswers,
) -> None:
    redis_url = require_redis()
    settings = {"redis_url": redis_url, "max_concurrent_answers": 1}
    async with start_answers(**settings) as node_a, start_answers(**settings) as node_b:
        ada = await node_a.user()
        session_id = await node_a.session(ada)
        node_a.fake.enqueue(Stream(["slow "] * 40, delay_s=0.05))
        on_a, _ = await WSClient.connect(node_a.server.ws_url, ada.access_token)
        on_b, _ = await WSClient.connect(node_b.server.ws_url, ada.access_token)
        node_a.sockets[ada.id], node_b.sockets[ada.id] = on_a, on_b
        for client in (on_a, on_b):
            await client.request({"type": "join", "session_id": session_id})
        running = await on_a.request(
            {"type": "message", "session_id": session_id, "content": "Tell me a long story"}
        )
        refused = await on_b.request(
            {"type": "message", "session_id": session_id, "content": "And another one"}
        )
        await node_a.settled(running["stream_id"])
        node_b.joined.add((ada.id, session_id))
        afterwards = await node_b.ask(ada, session_id, "Now another one")

    assert running["type"] == "ack"
    assert refused["type"] == "error" and refused["code"] == "too_many_answers"
    assert afterwards.end is not None and "error" not in afterwards.end


async def test_max_tokens_is_lowered_to_what_the_money_left_buys(
    start_answers: StartAnswers,
) -> None:
    async with start_answers(budget_usd_per_period=100.0) as answers:
        admin, ada, session_id, budget = await after_one_answer(answers)
        spent = budget["usd"]["used"]
        assert spent > 0  # at the catalogue's prices
        await set_budget(answers, admin, ada, usd_per_period=spent + 0.0003)

        await answers.ask(ada, session_id, "And of Chile?")

    sent = answers.streamed_requests()[-1].json or {}
    prompt = count_messages(sent["messages"])
    # What is left (300 000 nano-dollars) less the prompt, at the completion price.
    expected = int((300_000 - 0.00000015 * prompt * 1e9) / (0.0000006 * 1e9))
    assert sent["max_tokens"] == expected < 1024


async def test_the_budgets_kept_in_memory_are_bounded_however_many_users_connect(
    start_answers: StartAnswers, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every welcome frame reads its user's budget; with one cache entry per user ever
    # connected, a node's memory grew with its user count (0.4 KiB each at 10,000).
    monkeypatch.setattr(budgets_module, "BUDGETS_CACHED", 3)
    async with start_answers(budget_tokens_per_period=LOTS) as answers:
        welcomes = []
        for n in range(6):
            user = await answers.user(f"User{n}")
            client, welcome = await WSClient.connect(answers.server.ws_url, user.access_token)
            welcomes.append(welcome)
            await client.close()
        service = answers.server.container.budgets

        assert all(w["budget"]["tokens"]["limit"] == LOTS for w in welcomes)
        assert len(service._limits) <= 3 and len(service._spent) <= 3


async def test_a_regeneration_takes_one_of_the_concurrent_answers_too(
    start_answers: StartAnswers,
) -> None:
    # Regenerate and edit start answers without a new message: they went round the cap.
    async with start_answers(max_concurrent_answers=1) as answers:
        ada = await answers.user()
        session_id = await answers.session(ada)
        client, _ = await WSClient.connect(answers.server.ws_url, ada.access_token)
        answers.sockets[ada.id] = client
        await client.request({"type": "join", "session_id": session_id})
        first = await client.request(
            {"type": "message", "session_id": session_id, "content": "A short one"}
        )
        end = await client.next("stream.end", timeout=10)
        await answers.settled(first["stream_id"])
        answers.fake.enqueue(Stream(["slow "] * 20, delay_s=0.05))
        running = await client.request(
            {"type": "message", "session_id": session_id, "content": "Tell me a long story"}
        )
        again = await client.request(
            {"type": "regenerate", "session_id": session_id, "message_id": end["message"]["id"]}
        )
        await answers.settled(running["stream_id"])

    assert running["type"] == "ack"
    assert again["type"] == "error" and again["code"] == "too_many_answers"
