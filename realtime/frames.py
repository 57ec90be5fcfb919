"""The wire frames of docs/protocol.md, with no I/O: parse what clients send, build
what the server sends. Everything here is testable without a socket."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from errors import BadRequest, ParleyError

PROTOCOL_VERSION = 1
MAX_ID_CHARS = 128

# type → (required fields with their types, optional fields with their types)
_STR, _INT, _BOOL = (str,), (int,), (bool,)
CLIENT_FRAMES: dict[str, tuple[dict[str, tuple[type, ...]], dict[str, tuple[type, ...]]]] = {
    "join": ({"session_id": _STR}, {"since_seq": _INT}),
    "leave": ({"session_id": _STR}, {}),
    "message": (
        {"session_id": _STR, "content": _STR},
        {"client_msg_id": _STR, "reply": _STR, "search": _BOOL},
    ),
    "typing": ({"session_id": _STR, "active": _BOOL}, {}),
    "cancel": ({"session_id": _STR, "stream_id": _STR}, {}),
    "resume": ({"session_id": _STR, "stream_id": _STR, "offset": _INT}, {}),
    "regenerate": ({"session_id": _STR, "message_id": _STR}, {}),
    "edit": ({"session_id": _STR, "message_id": _STR, "content": _STR}, {}),
    "select_version": ({"session_id": _STR, "message_id": _STR, "version": _INT}, {}),
    "refresh": ({"token": _STR}, {}),
    "ping": ({}, {}),
}
# type → what the server replies to a frame that carries an ``id`` (besides ``error``).
CLIENT_FRAME_REPLIES: dict[str, str] = {
    "join": "joined",
    "leave": "left",
    "message": "ack",
    "typing": "ack",
    "cancel": "ack",
    "resume": "ack",
    "regenerate": "ack",
    "edit": "ack",
    "select_version": "ack",
    "refresh": "ack",
    "ping": "pong",
}


@dataclass(frozen=True)
class ClientFrame:
    type: str
    id: str | None
    fields: dict[str, Any]

    def __getitem__(self, name: str) -> Any:
        return self.fields.get(name)


class FrameError(BadRequest):
    """A bad frame: answered with an ``error`` carrying the frame's id when it had one."""

    def __init__(self, message: str, frame_id: str | None = None) -> None:
        super().__init__(message)
        self.frame_id = frame_id


def parse_client_frame(text: str) -> ClientFrame:
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise FrameError("frame is not valid JSON") from None
    if not isinstance(data, dict):
        raise FrameError("frame must be a JSON object")
    frame_id = data.get("id")
    if frame_id is not None and (not isinstance(frame_id, str) or len(frame_id) > MAX_ID_CHARS):
        raise FrameError(f"id must be a string of at most {MAX_ID_CHARS} characters")
    frame_type = data.get("type")
    if not isinstance(frame_type, str):
        raise FrameError("frame has no type", frame_id)
    spec = CLIENT_FRAMES.get(frame_type)
    if spec is None:
        raise FrameError(f"unknown frame type {frame_type!r}", frame_id)
    required, optional = spec
    fields: dict[str, Any] = {}
    for name, types in required.items():
        if name not in data:
            raise FrameError(f"{frame_type}: missing field {name!r}", frame_id)
        fields[name] = _typed(frame_type, name, data[name], types, frame_id)
    for name, types in optional.items():
        if data.get(name) is not None:
            fields[name] = _typed(frame_type, name, data[name], types, frame_id)
    return ClientFrame(frame_type, frame_id, fields)


def _typed(
    frame_type: str, name: str, value: Any, types: tuple[type, ...], frame_id: str | None
) -> Any:
    # bool is an int in Python; an integer field must not accept true/false.
    if not isinstance(value, types) or (types == _INT and isinstance(value, bool)):
        kind = {str: "a string", int: "an integer", bool: "a boolean"}[types[0]]
        raise FrameError(f"{frame_type}: {name} must be {kind}", frame_id)
    if isinstance(value, int) and value < 0:
        raise FrameError(f"{frame_type}: {name} must not be negative", frame_id)
    return value


def encode(frame: dict[str, Any]) -> str:
    """Serialise once; the result is handed to every recipient unchanged."""
    return orjson.dumps(frame).decode()


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def welcome(
    conn_id: str,
    user_id: str,
    name: str,
    heartbeat_s: float,
    budget: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "type": "welcome",
        "protocol": PROTOCOL_VERSION,
        "conn_id": conn_id,
        "user": {"id": user_id, "name": name},
        # 25, not 25.0: a whole number of seconds reads as one (the contract's example).
        "heartbeat_s": int(heartbeat_s) if float(heartbeat_s).is_integer() else heartbeat_s,
        "server_time": now_iso(),
        # What is left of the user's budget this period; null when unlimited.
        "budget": budget,
    }


def error_frame(exc: ParleyError, frame_id: str | None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", **exc.to_wire()}
    if frame_id is not None:
        frame["id"] = frame_id
    return frame


def with_id(frame: dict[str, Any], frame_id: str | None) -> dict[str, Any]:
    if frame_id is not None:
        frame["id"] = frame_id
    return frame


BUS_DEGRADED = "degraded"
BUS_RESTORED = "restored"


def bus_notice(status: str) -> dict[str, Any]:
    """Unasked: ``degraded`` while events from members on other servers may be late (the
    server's bus is down), ``restored`` once it is back and missed messages were sent."""
    return {"type": "bus", "status": status}
