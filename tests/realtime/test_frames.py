"""Client frame parsing, pure: text in, a ``ClientFrame`` or a ``FrameError`` out.

The same rules the WebSocket tests check on the wire (tests/ws/test_bad_frames.py),
here as tables without a server.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from errors import BadRequest
from realtime.frames import (
    CLIENT_FRAME_REPLIES,
    CLIENT_FRAMES,
    MAX_ID_CHARS,
    FrameError,
    encode,
    error_frame,
    parse_client_frame,
    welcome,
)


def text(**frame: Any) -> str:
    return orjson.dumps(frame).decode()


@pytest.mark.parametrize(
    ("raw", "frame_type", "frame_id", "fields"),
    [
        (text(type="ping"), "ping", None, {}),
        (text(type="ping", id="p1"), "ping", "p1", {}),
        (text(type="join", session_id="s"), "join", None, {"session_id": "s"}),
        (
            text(type="join", session_id="s", since_seq=0),
            "join",
            None,
            {"session_id": "s", "since_seq": 0},
        ),
        # An optional field that is null is as if it were absent.
        (text(type="join", session_id="s", since_seq=None), "join", None, {"session_id": "s"}),
        (
            text(type="message", id="m", session_id="s", content="hi", search=True),
            "message",
            "m",
            {"session_id": "s", "content": "hi", "search": True},
        ),
        (
            text(type="message", session_id="s", content="hi", client_msg_id="c"),
            "message",
            None,
            {"session_id": "s", "content": "hi", "client_msg_id": "c"},
        ),
        # Fields the type does not name are left out, not refused.
        (text(type="leave", session_id="s", extra=1), "leave", None, {"session_id": "s"}),
        (
            text(type="typing", session_id="s", active=False),
            "typing",
            None,
            {"session_id": "s", "active": False},
        ),
        (
            text(type="resume", session_id="s", stream_id="t", offset=12),
            "resume",
            None,
            {"session_id": "s", "stream_id": "t", "offset": 12},
        ),
        (text(type="refresh", token="x"), "refresh", None, {"token": "x"}),
        (text(type="ping", id="i" * MAX_ID_CHARS), "ping", "i" * MAX_ID_CHARS, {}),
    ],
)
def test_a_well_formed_frame_is_parsed(
    raw: str, frame_type: str, frame_id: str | None, fields: dict[str, Any]
) -> None:
    frame = parse_client_frame(raw)

    assert (frame.type, frame.id, frame.fields) == (frame_type, frame_id, fields)


@pytest.mark.parametrize(
    ("raw", "message", "frame_id"),
    [
        ("not json", "frame is not valid JSON", None),
        ("", "frame is not valid JSON", None),
        ("[1, 2]", "frame must be a JSON object", None),
        ('"ping"', "frame must be a JSON object", None),
        ("null", "frame must be a JSON object", None),
        (text(type="ping", id=7), "id must be a string of at most 128 characters", None),
        (
            text(type="ping", id="i" * (MAX_ID_CHARS + 1)),
            "id must be a string of at most 128 characters",
            None,
        ),
        (text(id="a"), "frame has no type", "a"),
        (text(type=3, id="a"), "frame has no type", "a"),
        (text(type="shout", id="a"), "unknown frame type 'shout'", "a"),
        (text(type="join", id="a"), "join: missing field 'session_id'", "a"),
        (text(type="join", session_id=5), "join: session_id must be a string", None),
        (
            text(type="join", session_id="s", since_seq="1"),
            "join: since_seq must be an integer",
            None,
        ),
        # true is an int to Python, not to the protocol.
        (
            text(type="join", session_id="s", since_seq=True),
            "join: since_seq must be an integer",
            None,
        ),
        (
            text(type="join", session_id="s", since_seq=-1),
            "join: since_seq must not be negative",
            None,
        ),
        (text(type="typing", session_id="s", active=1), "typing: active must be a boolean", None),
        (
            text(type="resume", id="r", session_id="s", stream_id="t", offset=1.5),
            "resume: offset must be an integer",
            "r",
        ),
        (text(type="message", session_id="s"), "message: missing field 'content'", None),
    ],
)
def test_a_bad_frame_is_refused_with_its_id_when_it_had_a_usable_one(
    raw: str, message: str, frame_id: str | None
) -> None:
    with pytest.raises(FrameError) as refused:
        parse_client_frame(raw)

    assert refused.value.message == message
    assert refused.value.frame_id == frame_id
    assert isinstance(refused.value, BadRequest)  # answered as bad_request


@pytest.mark.parametrize("frame_type", sorted(CLIENT_FRAMES))
def test_every_frame_type_has_a_reply_and_parses_with_its_required_fields(
    frame_type: str,
) -> None:
    required, _ = CLIENT_FRAMES[frame_type]
    samples = {str: "x", int: 1, bool: True}
    raw = text(type=frame_type, id="q", **{name: samples[t[0]] for name, t in required.items()})

    frame = parse_client_frame(raw)

    assert frame.type == frame_type and frame.id == "q"
    assert set(frame.fields) == set(required)
    assert frame_type in CLIENT_FRAME_REPLIES


@pytest.mark.parametrize(
    ("frame_id", "wanted"),
    [
        (None, {"type": "error", "code": "bad_request", "message": "no"}),
        ("e1", {"type": "error", "code": "bad_request", "message": "no", "id": "e1"}),
    ],
)
def test_an_error_frame_carries_the_code_and_the_id(
    frame_id: str | None, wanted: dict[str, Any]
) -> None:
    assert error_frame(FrameError("no"), frame_id) == wanted


@pytest.mark.parametrize(("heartbeat_s", "shown"), [(25.0, 25), (25, 25), (2.5, 2.5)])
def test_the_welcome_shows_a_whole_heartbeat_as_an_integer(
    heartbeat_s: float, shown: float
) -> None:
    frame = orjson.loads(encode(welcome("c", "u", "Ada", heartbeat_s)))

    assert frame["heartbeat_s"] == shown
    assert type(frame["heartbeat_s"]) is type(shown)
    assert frame["protocol"] == 1 and frame["user"] == {"id": "u", "name": "Ada"}
