"""What travels on the bus: a small routing header and the frame, encoded once.

``header JSON`` + ``\\n`` + ``frame JSON``. A receiving node reads only the header to
decide who gets the frame (seq order, typing not echoed, stream cursors) and hands
the frame text to every local recipient as it is, without decoding it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

MESSAGE = "message"
TYPING = "typing"
PRESENCE = "presence"
MEMBER = "member"
STREAM = "stream"
VERSION = "version"
CONTROL = "control"


@dataclass(slots=True)
class Envelope:
    kind: str
    session_id: str
    frame: str
    seq: int | None = None
    user_id: str | None = None
    stream_id: str | None = None
    # For stream frames: the delta index; for an end, how many deltas the stream had;
    # None for start and status.
    index: int | None = None
    stream_end: bool = False
    # For control envelopes: what to do, with its arguments.
    action: dict[str, Any] | None = None
    # Wall-clock publish time, for the fan-out latency metric across nodes.
    sent_at: float | None = None


def pack(envelope: Envelope) -> bytes:
    header: dict[str, Any] = {"k": envelope.kind, "s": envelope.session_id}
    if envelope.seq is not None:
        header["q"] = envelope.seq
    if envelope.user_id is not None:
        header["u"] = envelope.user_id
    if envelope.stream_id is not None:
        header["t"] = envelope.stream_id
    if envelope.index is not None:
        header["i"] = envelope.index
    if envelope.stream_end:
        header["e"] = 1
    if envelope.action is not None:
        header["a"] = envelope.action
    if envelope.sent_at is not None:
        header["w"] = envelope.sent_at
    return orjson.dumps(header) + b"\n" + envelope.frame.encode()


def unpack(data: bytes) -> Envelope:
    head, _, frame = data.partition(b"\n")
    header = orjson.loads(head)
    return Envelope(
        kind=header["k"],
        session_id=header["s"],
        frame=frame.decode(),
        seq=header.get("q"),
        user_id=header.get("u"),
        stream_id=header.get("t"),
        index=header.get("i"),
        stream_end=bool(header.get("e")),
        action=header.get("a"),
        sent_at=header.get("w"),
    )
