"""Reading a model's event stream a read at a time: the same events as httpx-sse, and
plain text chunks read by their shape exactly as a full parse reads them."""

from __future__ import annotations

import json
import random
from typing import Any

import orjson
import pytest
from httpx_sse._decoders import SSEDecoder, SSELineDecoder

from llm.openrouter import _StreamState
from llm.openrouter_chunks import TextChunkShape
from llm.sse_batch import EventSplitter

BODIES = [
    'data: {"a":1}\n\ndata: {"a":2}\n\n',
    ": OPENROUTER PROCESSING\n\ndata: one\n\n: another comment\n\ndata: two\n\n",
    "data: first line\ndata: second line\n\nevent: ping\ndata: x\n\n",
    "data:no space\n\ndata:  two spaces\n\ndata: \n\ndata\n\n",
    "id: 7\ndata: with an id\n\nretry: 100\n\nevent: only\n\n\n\n\ndata: after blanks\n\n",
    "data: crlf\r\n\r\ndata: then lf\n\ndata: cr\r\rdata: tail\n\n",
    "data: a\n\ndata: b\r\n\r\ndata: c\n\ndata: unfinished\n",
    "id: 1\ndata: a\n\ndata: b\n\n\n\ndata: c\n\n\n",
    "data: ends without a blank line",
    "data: ends in cr\r\r",
    'data: {"choices":[{"delta":{"content":"é ✓ 🙂"}}]}\n\n',
]


def httpx_sse_reads(pieces: list[str]) -> list[str]:
    lines, events = SSELineDecoder(), SSEDecoder()
    out: list[str] = []
    for piece in pieces:
        out += [e.data for line in lines.decode(piece) if (e := events.decode(line)) is not None]
    return out + [e.data for line in lines.flush() if (e := events.decode(line)) is not None]


def splitter_reads(pieces: list[str]) -> list[str]:
    splitter = EventSplitter()
    out: list[str] = []
    for piece in pieces:
        out += splitter.decode(piece)
    return out + splitter.flush()


@pytest.mark.parametrize("body", BODIES)
def test_every_body_split_anywhere_reads_as_httpx_sse_reads_it(body: str) -> None:
    expected = httpx_sse_reads([body])
    assert splitter_reads([body]) == expected
    for cut in range(1, len(body)):
        pieces = [body[:cut], body[cut:]]
        assert splitter_reads(pieces) == httpx_sse_reads(pieces) == expected, cut
    assert splitter_reads(list(body)) == expected  # a character per read


def test_random_bodies_cut_at_random_read_as_httpx_sse_reads_them() -> None:
    parts = ["data: x", "data:y", "data: ", ": c", "id: 3", "event: e", "retry: 5", "zz: q"]
    ends = ["\n", "\n", "\n", "\r\n", "\r"]
    rng = random.Random(19)
    for _ in range(400):
        body = "".join(rng.choice(parts) * rng.randint(0, 1) + rng.choice(ends) for _ in range(12))
        cuts = sorted(rng.sample(range(1, len(body)), k=min(3, len(body) - 1)))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        assert splitter_reads(pieces) == httpx_sse_reads(pieces), repr(body)
    # The same, with "\n" line ends only (no body falls back to httpx-sse's decoders).
    for _ in range(400):
        body = "".join(rng.choice(parts) * rng.randint(0, 1) + "\n" for _ in range(12))
        cuts = sorted(rng.sample(range(1, len(body)), k=min(3, len(body) - 1)))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        assert splitter_reads(pieces) == httpx_sse_reads(pieces), repr(body)


def chunk(text: str, **extra: Any) -> dict[str, Any]:
    choice = {"index": 0, "delta": {"content": text}, "finish_reason": None, "logprobs": None}
    return {"id": "gen-1", "model": "m", "created": 1, "choices": [choice], **extra}


TEXTS = ["tok ", "a", 'say "hi"', "line\nbreak", "back\\slash", "é ✓ 🙂", "\t", "gen-1", "m"]


def test_text_chunks_read_by_their_shape_read_as_a_full_parse_reads_them() -> None:
    shaped = _StreamState("m")
    shape = TextChunkShape()
    datas = [orjson.dumps(chunk("first")).decode()]
    datas += [orjson.dumps(chunk(text)).decode() for text in TEXTS * 3]
    # Python's json writes non-ASCII as \u escapes, with spaces: a shape of its own.
    datas += [json.dumps(chunk(text)) for text in ("café", "naïve")]
    misses = 0
    for data in datas:
        full = parsed_text(data)
        assert shaped.feed(data) == full
        read = shape.text(data)
        assert read is None or read == full
        if read is None:
            misses += 1
            shape.learn(data, orjson.loads(data), full)
    # Only the first chunk, and those written otherwise than orjson writes (no shape is
    # learnt from them: their text is not found as orjson would write it), were parsed.
    assert misses == 3


def parsed_text(data: str) -> str:
    return str(orjson.loads(data)["choices"][0]["delta"]["content"])


def test_a_chunk_that_differs_beyond_its_text_is_parsed_in_full() -> None:
    state = _StreamState("m")
    for text in ("a", "b"):
        assert state.feed(orjson.dumps(chunk(text)).decode()) == text
    finish = chunk("c")
    finish["choices"][0]["finish_reason"] = "stop"
    assert state.feed(orjson.dumps(finish).decode()) == "c"
    assert state.finish_reason == "stop"
    usage = chunk("d", usage={"prompt_tokens": 3, "completion_tokens": 4})
    assert state.feed(orjson.dumps(usage).decode()) == "d"
    assert state.usage is not None and state.usage.completion_tokens == 4
    error = chunk("", error={"code": 502, "message": "gone"})
    assert state.feed(orjson.dumps(error).decode()) == ""
    assert state.error is not None


def test_a_text_that_is_not_one_string_where_the_shape_has_it_is_not_taken() -> None:
    shape = TextChunkShape()
    data = orjson.dumps(chunk("x")).decode()
    shape.learn(data, orjson.loads(data), "x")
    # Another key smuggled in where the text was: valid JSON, another chunk.
    forged = data.replace('"x"', '"x","tool_calls":"y"')
    assert orjson.loads(forged)["choices"][0]["delta"]["tool_calls"] == "y"
    assert shape.text(forged) is None
    assert shape.text(data.replace('"x"', '"x\\"')) is None  # an escaped closing quote


def test_a_text_found_elsewhere_in_the_chunk_teaches_no_shape() -> None:
    shape = TextChunkShape()
    # "gen-1" is the id too: where the text sits cannot be told, so no shape.
    data = orjson.dumps(chunk("gen-1")).decode()
    shape.learn(data, orjson.loads(data), "gen-1")
    assert shape.text(orjson.dumps(chunk("other")).decode()) is None
    # Nor one whose text is not the content (a probe would not read back there).
    odd = orjson.dumps({**chunk("zz"), "note": "q"}).decode().replace('"zz"', '"yy"', 1)
    shape.learn(odd, orjson.loads(odd), "q")
    assert shape.text(odd.replace('"q"', '"r"')) is None


def test_chunks_that_never_repeat_their_shape_stop_the_learning() -> None:
    shape = TextChunkShape()
    for n in range(20):
        data = orjson.dumps(chunk("t", created=n)).decode()
        assert shape.text(data) is None
        shape.learn(data, orjson.loads(data), "t")
    # Given up: even a chunk of the last shape is parsed in full from here on.
    assert shape.text(orjson.dumps(chunk("u", created=19)).decode()) is None
