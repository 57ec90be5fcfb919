"""Every request sent to a model lands in the spend record, with its kind, its model,
the upstream's own token counts and the catalogue's price."""

from __future__ import annotations

import orjson

from tests.budgets.conftest import kinds, usage
from tests.context.answers import MODEL, StartAnswers, stages
from tests.fakes.openrouter import HttpError, Stream
from tests.wsclient import WSClient

FALLBACK = "anthropic/claude-3.5-sonnet"
# The fake's catalogue lists every model at these prices (dollars per token).
PROMPT_USD, COMPLETION_USD = 0.00000015, 0.0000006


async def test_every_kind_of_model_request_lands_in_usage(start_answers: StartAnswers) -> None:
    filler = " ".join(["the garden path wound past old stone walls and quiet hedges"] * 10)
    async with start_answers(
        llm_context_length=1024,
        llm_reply_reserve_tokens=128,
        llm_fallback_models=[FALLBACK],
        llm_max_retries=1,
    ) as answers:
        answers.server.container.context.tool_models = {MODEL}
        ada = await answers.user()
        session_id = await answers.session(ada)
        # An answer whose first attempt fails and is retried; then the memory extraction.
        learned = {"items": [{"kind": "fact", "content": "works as a nurse in Leeds"}]}
        answers.fake.enqueue(HttpError(502), model=MODEL)
        answers.fake.enqueue(Stream(["Nice ", "to ", "meet ", "you."]))
        answers.fake.enqueue(Stream([orjson.dumps(learned).decode()]))
        await answers.ask(ada, session_id, "I work as a nurse in Leeds.")
        # A tool call and the search round that answers it.
        call = {
            "id": "call_1",
            "type": "function",
            "function": {"name": "web_search", "arguments": '{"query": "parley release"}'},
        }
        answers.fake.enqueue(
            Stream([], tool_calls=[call], finish_reason="tool_calls"), Stream(["It ", "shipped."])
        )
        await answers.ask(ada, session_id, "When did Parley ship?")
        # The model is down for good: its retries fail and the fallback answers.
        answers.fake.enqueue(HttpError(503), HttpError(503), model=MODEL)
        answers.fake.enqueue(Stream(["Fine."]), model=FALLBACK)
        answers.server.container.context.tool_models = set()
        fell_back = await answers.ask(ada, await answers.session(ada), "Hello?")
        # A long conversation: its oldest turns are folded into a summary.
        folded = False
        for turn in range(12):
            streamed = await answers.ask(ada, session_id, f"Turn {turn}: {filler}")
            if "summarising" in stages(streamed):
                folded = True
                break
        assert folded, "the conversation never outgrew the window"
        report = await usage(answers, ada)
        metrics = (await answers.http.get("/metrics")).text

    assert fell_back.text == "Fine." and fell_back.end is not None
    assert fell_back.end["model"] == FALLBACK
    counted = kinds(report)
    assert {"answer", "retry", "memory", "search_round", "fallback", "summary"} <= set(counted)
    # Every request the fake was sent is one spend event, none more, none fewer.
    assert sum(counted.values()) == len(answers.fake.chat_requests)
    fallback = [line for line in report["spend"] if line["kind"] == "fallback"]
    assert [line["model"] for line in fallback] == [FALLBACK]
    total = sum(line["prompt_tokens"] + line["completion_tokens"] for line in report["spend"])
    assert report["budget"]["tokens"]["used"] == total
    assert report["budget"]["tokens"]["limit"] is None  # unlimited by default
    cost = sum(
        line["prompt_tokens"] * PROMPT_USD + line["completion_tokens"] * COMPLETION_USD
        for line in report["spend"]
    )
    assert abs(report["budget"]["usd"]["used"] - cost) < 1e-8
    assert f'parley_llm_spend_usd_total{{model="{MODEL}"}}' in metrics
    assert 'parley_llm_spend_tokens_total{direction="prompt",kind="summary"' in metrics


async def test_a_cancelled_answer_is_counted_by_estimate(start_answers: StartAnswers) -> None:
    async with start_answers() as answers:
        ada = await answers.user()
        session_id = await answers.session(ada)
        answers.fake.enqueue(Stream(["word "] * 200, delay_s=0.02))
        client, _ = await WSClient.connect(answers.server.ws_url, ada.access_token)
        answers.sockets[ada.id] = client
        await client.request({"type": "join", "session_id": session_id})
        ack = await client.request(
            {"type": "message", "session_id": session_id, "content": "Tell me a long story"}
        )
        await client.next("stream.delta", timeout=10)
        await client.send(
            {"type": "cancel", "session_id": session_id, "stream_id": ack["stream_id"]}
        )
        end = await client.next("stream.end", timeout=10)
        await answers.settled(ack["stream_id"])
        report = await usage(answers, ada)

    assert end["finish_reason"] == "cancelled"
    [line] = report["spend"]
    assert line["kind"] == "answer" and line["calls"] == 1
    # No usage chunk came: the prompt and the text produced are counted by estimate.
    assert line["prompt_tokens"] == end["usage"]["prompt_tokens"] > 0
    assert 0 < line["completion_tokens"] < 200
