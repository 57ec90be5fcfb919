"""The OpenRouter client against the byte-faithful fake."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from errors import BadRequest, Unavailable
from llm.openrouter import _StreamState
from llm.provider import ChatRequest, StreamFinished, TextDelta, ToolCall, Usage
from tests.fakes.openrouter import FakeOpenRouter, Fast, Hang, HttpError, MidStreamError, Stream
from tests.llm.conftest import MakeProvider

MODEL = "openai/gpt-4o-mini"
REQUEST = ChatRequest(MODEL, [{"role": "user", "content": "Say hello"}], max_tokens=50)


async def collect(provider, request: ChatRequest = REQUEST) -> list:  # type: ignore[no-untyped-def]
    return [event async for event in provider.stream(request)]


async def test_a_stream_yields_the_tokens_then_usage_from_the_final_chunk(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    fake_openrouter.enqueue(Stream(["Hel", "lo", " there"]))
    events = await collect(make_provider())
    assert all(isinstance(event, TextDelta) for event in events[:-1])
    assert "".join(event.text for event in events[:-1]) == "Hello there"
    end = events[-1]
    assert isinstance(end, StreamFinished)
    assert end.finish_reason == "stop"
    assert end.model == MODEL
    assert end.usage is not None and end.usage.completion_tokens == 2
    assert end.generation_id == "gen-fake-1"


async def test_text_that_arrives_together_is_one_delta_and_text_apart_is_not_held(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    # Fast writes 200 events in one write; Stream leaves 50 ms between its tokens.
    fake_openrouter.enqueue(Fast(200))
    fake_openrouter.enqueue(Stream(["a", "b", "c"], delay_s=0.05))
    provider = make_provider()

    burst = await collect(provider)
    apart = await collect(provider)

    assert "".join(event.text for event in burst[:-1]) == "tok " * 200
    assert len(burst) - 1 < 10
    assert apart[:-1] == [TextDelta("a"), TextDelta("b"), TextDelta("c")]
    assert burst[-1].finish_reason == apart[-1].finish_reason == "stop"


async def test_answers_one_after_another_share_one_connection(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    # The stream ends at [DONE]; the body's end follows it. Closing the response
    # before reading that would close the connection too.
    provider = make_provider()
    for _ in range(3):
        events = await collect(provider)
        assert events[-1].finish_reason == "stop"

    peers = {request.peer for request in fake_openrouter.chat_requests}
    assert len(fake_openrouter.chat_requests) == 3 and len(peers) == 1


async def test_a_body_left_open_after_done_does_not_hold_the_answer(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    # The end of the body is waited for briefly (to keep the connection), not forever.
    fake_openrouter.enqueue(Stream(["all", " here"], linger_after_done=True))
    loop = asyncio.get_running_loop()
    started = loop.time()

    events = await collect(make_provider())

    assert loop.time() - started < 1.0
    assert "".join(event.text for event in events[:-1]) == "all here"
    assert events[-1].finish_reason == "stop"
    assert await fake_openrouter.wait_disconnect()


async def test_a_200_that_is_not_an_event_stream_is_unavailable(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    # A JSON body where the event stream should be (a proxy, a misconfigured base URL).
    fake_openrouter.enqueue(HttpError(200, "not a stream"))
    with pytest.raises(Unavailable, match="something other than a stream"):
        await collect(make_provider())


async def test_the_request_carries_the_key_attribution_and_stream_options(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    await collect(make_provider())
    sent = fake_openrouter.chat_requests[0]
    assert sent.headers["authorization"] == "Bearer sk-or-test"
    assert sent.headers["http-referer"] == "https://parley.test"
    assert sent.headers["x-title"] == "Parley tests"
    assert sent.json is not None
    assert sent.json["stream"] is True
    assert sent.json["stream_options"] == {"include_usage": True}
    assert sent.json["max_tokens"] == 50
    assert "temperature" not in sent.json


async def test_the_caller_is_told_once_the_request_is_written_and_before_any_event(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    # Hang: the request is written, and nothing comes back until the test stops it.
    fake_openrouter.enqueue(Hang())
    told = asyncio.Event()
    request = ChatRequest(MODEL, [{"role": "user", "content": "hi"}], on_sent=told.set)
    stream = make_provider(first_token_timeout_s=30).stream(request)
    reading = asyncio.ensure_future(anext(stream))

    await asyncio.wait_for(told.wait(), 5)

    assert not reading.done()  # told before the response said anything
    for _ in range(250):  # and what it was told of does reach the upstream
        if fake_openrouter.chat_requests:
            break
        await asyncio.sleep(0.02)
    arrived = fake_openrouter.chat_requests[0].json
    assert arrived is not None and arrived["messages"] == request.messages
    reading.cancel()
    await asyncio.gather(reading, return_exceptions=True)
    await stream.aclose()


async def test_a_stream_cut_by_max_tokens_finishes_with_length(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    fake_openrouter.enqueue(Stream(["a", "b"], finish_reason="length"))
    events = await collect(make_provider())
    assert events[-1].finish_reason == "length"


async def test_tool_call_fragments_are_assembled_into_one_call(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "web_search", "arguments": ""}}
    rest = {"index": 0, "function": {"arguments": '{"q": "paris"}'}}
    fake_openrouter.enqueue(Stream([], tool_calls=[call, rest], finish_reason="tool_calls"))
    events = await collect(make_provider())
    assert events[0] == ToolCall("call_1", "web_search", '{"q": "paris"}')
    assert events[-1].finish_reason == "stop"


@pytest.mark.parametrize(
    ("status", "error_class", "words"),
    [
        (400, BadRequest, "rejected"),
        (401, Unavailable, "API key"),
        (402, Unavailable, "credit"),
        (403, Unavailable, "refused"),
        (408, Unavailable, "timed out"),
        (429, Unavailable, "rate limiting"),
        (502, Unavailable, "unavailable"),
        (503, Unavailable, "unavailable"),
    ],
)
async def test_an_http_error_before_the_stream_is_raised_as_a_parley_error(
    fake_openrouter: FakeOpenRouter,
    make_provider: MakeProvider,
    status: int,
    error_class: type[Exception],
    words: str,
) -> None:
    fake_openrouter.enqueue(HttpError(status, "nope"))
    with pytest.raises(error_class) as caught:
        await collect(make_provider())
    assert words in str(caught.value)
    assert getattr(caught.value, "upstream_status", None) == status


async def test_a_429_carries_retry_after_from_the_header(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    fake_openrouter.enqueue(HttpError(429, "slow down", retry_after=7))
    with pytest.raises(Unavailable) as caught:
        await collect(make_provider())
    assert caught.value.retry_after == 7
    assert caught.value.to_wire()["retry_after"] == 7


async def test_a_connection_refused_is_unavailable(http_client) -> None:  # type: ignore[no-untyped-def]
    from llm.openrouter import OpenRouterProvider

    provider = OpenRouterProvider(
        http_client, "http://127.0.0.1:9/api/v1", "k", referer="r", title="t"
    )
    with pytest.raises(Unavailable, match="cannot reach"):
        await collect(provider)


async def test_an_error_chunk_after_text_ends_the_stream_with_error(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    fake_openrouter.enqueue(MidStreamError(["Par", "tial"]))
    events = await collect(make_provider())
    assert all(isinstance(event, TextDelta) for event in events[:-1])
    assert "".join(event.text for event in events[:-1]) == "Partial"
    end = events[-1]
    assert end.finish_reason == "error"
    assert isinstance(end.error, Unavailable)
    assert "Provider disconnected unexpectedly" in end.error.message


async def test_an_error_chunk_before_any_text_is_raised(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    fake_openrouter.enqueue(MidStreamError([]))
    with pytest.raises(Unavailable, match="Provider disconnected"):
        await collect(make_provider())


async def test_the_first_token_deadline_fires_while_comments_keep_arriving(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    fake_openrouter.enqueue(Hang(comment_every_s=0.01))
    with pytest.raises(Unavailable, match="did not start answering"):
        await collect(make_provider(first_token_timeout_s=0.3, idle_timeout_s=5))
    assert await fake_openrouter.wait_disconnect()


async def test_the_first_token_deadline_fires_when_nothing_arrives(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    fake_openrouter.enqueue(Hang(comment_every_s=None))
    with pytest.raises(Unavailable, match="did not start answering"):
        await collect(make_provider(first_token_timeout_s=0.3))


async def test_the_idle_deadline_after_text_ends_the_stream_with_error(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    fake_openrouter.enqueue(Stream(["still", " here"], hang_after=True))
    events = await collect(make_provider(first_token_timeout_s=5, idle_timeout_s=0.3))
    assert [e.text for e in events[:-1]] == ["still", " here"]
    assert events[-1].finish_reason == "error"
    assert "sent nothing more" in events[-1].error.message
    assert await fake_openrouter.wait_disconnect()


async def test_the_total_deadline_ends_a_slow_stream(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    fake_openrouter.enqueue(Stream(["x"] * 100, delay_s=0.05))
    provider = make_provider(first_token_timeout_s=5, idle_timeout_s=5, total_timeout_s=0.4)
    events = await collect(provider)
    assert 0 < len(events) - 1 < 100
    assert events[-1].finish_reason == "error"
    assert "did not finish" in events[-1].error.message


async def test_closing_the_generator_closes_the_upstream_response(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    fake_openrouter.enqueue(Stream(["tok"] * 1000, delay_s=0.01))
    stream = make_provider().stream(REQUEST)
    assert await anext(stream) == TextDelta("tok")
    await stream.aclose()  # type: ignore[attr-defined]
    assert await fake_openrouter.wait_disconnect()
    generation = fake_openrouter.generations["gen-fake-1"]
    assert generation["cancelled"] is True


async def test_cancelling_the_consuming_task_closes_the_upstream_response(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    fake_openrouter.enqueue(Stream(["tok"] * 1000, delay_s=0.01))
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in make_provider().stream(REQUEST):
            first.set()

    task = asyncio.create_task(consume())
    await first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await fake_openrouter.wait_disconnect()


async def test_generation_usage_reports_the_tokens_of_a_cancelled_stream(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    fake_openrouter.enqueue(Stream(["one", " two", " three"] + [" more"] * 500, delay_s=0.01))
    provider = make_provider()
    stream = provider.stream(REQUEST)
    seen = [await anext(stream), await anext(stream)]
    await stream.aclose()  # type: ignore[attr-defined]
    assert await fake_openrouter.wait_disconnect()
    usage = await provider.generation_usage("gen-fake-1")
    assert usage is not None
    assert usage.prompt_tokens > 0
    assert usage.completion_tokens >= len(seen)
    assert await provider.generation_usage("gen-unknown") is None


async def test_complete_returns_the_whole_reply(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    fake_openrouter.enqueue(Stream(["A short ", "summary."]))
    assert await make_provider().complete(REQUEST) == "A short summary."
    sent = fake_openrouter.chat_requests[0].json
    assert sent is not None and not sent.get("stream")


async def test_complete_maps_errors_like_the_stream(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    fake_openrouter.enqueue(HttpError(402, "no credit"))
    with pytest.raises(Unavailable, match="credit"):
        await make_provider().complete(REQUEST)


async def test_context_length_comes_from_the_models_endpoint_and_is_cached(
    fake_openrouter: FakeOpenRouter, make_provider: MakeProvider
) -> None:
    provider = make_provider()
    assert await provider.context_length(MODEL) == 128_000
    assert await provider.context_length("meta-llama/llama-3-8b-instruct") == 8192
    assert await provider.context_length("unknown/model") is None
    model_calls = [r for r in fake_openrouter.requests if r.path.endswith("/models")]
    assert len(model_calls) == 1


def test_usage_totals_prompt_and_completion() -> None:
    assert Usage(3, 4).total_tokens == 7


def test_text_chunks_read_the_same_on_the_common_and_the_general_path() -> None:
    # Plain text chunks take a short path; anything else (a finish reason, usage,
    # an error, tool calls) takes the general one, whatever else the chunk carries.
    state = _StreamState(MODEL)
    chunk = {"id": "gen-1", "choices": [{"index": 0, "delta": {"content": "a"}}]}

    first = state.feed(orjson.dumps(chunk).decode())
    plain = state.feed(orjson.dumps({**chunk, "usage": None}).decode())
    chunk["choices"][0]["finish_reason"] = "stop"  # type: ignore[index]
    last = state.feed(orjson.dumps(chunk).decode())
    empty = state.feed(orjson.dumps({"id": "gen-1", "choices": [{"delta": {}}]}).decode())

    assert first == plain == last == "a"
    assert empty == "" and not state.content_at_last_feed
    assert state.generation_id == "gen-1" and state.finish_reason == "stop" and state.text_seen
