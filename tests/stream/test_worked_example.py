"""docs/protocol.md's worked session (section 8), replayed against a running server.

The document's frames are parsed out of its code block and compared with what a real
server sends: frame types in order, every field the document shows (names and, where
they are not placeholders, values) and the fields of the stored messages.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.conftest import Connect, LiveServer, TestUser
from tests.fakes.openrouter import FakeOpenRouter, Stream
from tests.wsclient import WSClient

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
_LINE = re.compile(r"^(Ada|Bob) (→|←) (\{.*\})$")
# Values the document shortens or cannot know: ids, times, token counts.
PLACEHOLDERS = {
    "session_id",
    "user_id",
    "conn_id",
    "stream_id",
    "reply_to",
    "created_at",
    "server_time",
    "usage",
}


def example_frames() -> list[tuple[str, str, dict[str, Any], bool]]:
    """(who, direction, frame, complete) for every JSON line of section 8's example;
    ``complete`` is False where the document elides fields with ``…``."""
    text = DOCUMENT.read_text(encoding="utf-8")
    block = text.split("## 8. A worked session", 1)[1].split("```text", 1)[1].split("```")[0]
    frames = []
    for line in block.strip().splitlines():
        match = _LINE.match(line.strip())
        if match is None:
            continue
        raw = match.group(3)
        complete = "…" not in raw.replace('"…"', '""')
        raw = raw.replace(",…", "").replace('"…"', '""')
        frames.append((match.group(1), match.group(2), orjson.loads(raw), complete))
    return frames


def assert_matches(documented: Any, actual: Any, complete: bool, path: str = "") -> None:
    if isinstance(documented, dict):
        assert isinstance(actual, dict), f"{path}: {actual!r} is not an object"
        if complete:
            assert set(actual) == set(documented), f"{path}: fields {sorted(actual)}"
        for key, value in documented.items():
            assert key in actual, f"{path}.{key} is documented but not sent"
            if key in PLACEHOLDERS or (key == "id" and path.endswith(("message", "user"))):
                continue
            assert_matches(value, actual[key], complete, f"{path}.{key}")
    elif isinstance(documented, list):
        assert isinstance(actual, list) and len(actual) == len(documented), path
        for index, (doc_item, item) in enumerate(zip(documented, actual, strict=True)):
            assert_matches(doc_item, item, complete, f"{path}[{index}]")
    elif documented != "":
        assert actual == documented, f"{path}: sent {actual!r}, documented {documented!r}"


async def test_the_worked_session_of_the_protocol_document_is_what_the_server_sends(
    connect: Connect,
    live_server: LiveServer,
    room: tuple[TestUser, TestUser, str],
    fake_openrouter: FakeOpenRouter,
    live_client: httpx.AsyncClient,
) -> None:
    ada, bob, session_id = room
    for n in range(12):  # the example starts at seq 12
        posted = await live_client.post(
            f"/v1/sessions/{session_id}/messages",
            json={"content": f"earlier {n}", "reply": "none"},
            headers=ada.headers,
        )
        assert posted.status_code == 201
    # Paced, so that each token is its own read and its own delta, as in the document.
    fake_openrouter.enqueue(Stream(["The ", "launch ", "moves to May."], delay_s=0.05))
    bob_ws = await connect(bob)
    await bob_ws.request({"type": "join", "session_id": session_id})
    ada_ws, ada_welcome = await WSClient.connect(live_server.ws_url, ada.access_token)

    clients = {"Ada": ada_ws, "Bob": bob_ws}
    received: dict[str, list[dict[str, Any]]] = {"Ada": [ada_welcome], "Bob": []}
    expected: dict[str, list[tuple[dict[str, Any], bool]]] = {"Ada": [], "Bob": []}
    for who, direction, frame, complete in example_frames():
        if direction == "→":
            await clients[who].send({**frame, "session_id": session_id})
        else:
            expected[who].append((frame, complete))
    # Everything Ada and Bob receive, up to the answer's stream.end.
    for who in ("Ada", "Bob"):
        while not received[who] or received[who][-1]["type"] != "stream.end":
            received[who].append(await clients[who].next(timeout=10))
    await ada_ws.close()

    def in_order(frames: list[dict[str, Any]]) -> list[str]:
        # The ack answers the message frame and may come before or after the
        # broadcasts (the document says so); which stages a turn goes through depends
        # on the session (checked below). Everything else keeps the document's order.
        return [f["type"] for f in frames if f["type"] not in ("ack", "stream.status")]

    assert in_order(received["Ada"]) == in_order([f for f, _ in expected["Ada"]])
    acks = [f for f in received["Ada"] if f["type"] == "ack"]
    assert [a.get("id") for a in acks] == ["m1"], acks
    documented_stages = {f["stage"] for f, _ in expected["Ada"] if f["type"] == "stream.status"}
    sent_stages = [f["stage"] for f in received["Ada"] if f["type"] == "stream.status"]
    assert "generating" in sent_stages and set(sent_stages) <= documented_stages | {
        "searching",
        "summarising",
    }
    by_type_sent: dict[str, list[dict[str, Any]]] = {}
    for frame in received["Ada"]:
        by_type_sent.setdefault(frame["type"], []).append(frame)
    seen: dict[str, int] = {}
    for frame, complete in expected["Ada"]:
        if frame["type"] == "stream.status":
            continue
        index = seen.get(frame["type"], 0)
        seen[frame["type"]] = index + 1
        assert_matches(frame, by_type_sent[frame["type"]][index], complete, frame["type"])
    for frame, complete in expected["Bob"]:
        match = next(f for f in received["Bob"] if f["type"] == frame["type"])
        assert_matches(frame, match, complete, "Bob:" + frame["type"])
