"""A stream that ends while a member's join is being answered: it is in the joined
reply's history or in its streams (not in neither), and the member gets every index
and the end once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import LiveServer, TestUser
from tests.fakes.openrouter import FakeOpenRouter, Stream
from tests.ws.conftest import Connect


async def test_a_stream_ending_during_a_join_is_in_its_history_or_its_streams(
    connect: Connect,
    room: tuple[TestUser, TestUser, str],
    fake_openrouter: FakeOpenRouter,
    live_server: LiveServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ada, bob, session_id = room
    tokens = [f"t{i} " for i in range(20)]
    fake_openrouter.enqueue(Stream(tokens, delay_s=0.02))
    ada_ws = await connect(ada)
    await ada_ws.request({"type": "join", "session_id": session_id})
    ack = await ada_ws.request({"type": "message", "session_id": session_id, "content": "go"})
    stream_id = ack["stream_id"]
    await ada_ws.next("stream.delta", lambda f: f["stream_id"] == stream_id, timeout=10)

    sessions = live_server.container.sessions
    read_history = sessions.join_state
    ended = asyncio.Event()

    async def join_state(*args: Any, **kwargs: Any) -> Any:
        # Bob's join reads the database, and the answer ends right then: whichever of
        # the history and the running streams the join reads first, the answer must
        # be in the one read second.
        state = await read_history(*args, **kwargs)
        await ada_ws.next("stream.end", lambda f: f["stream_id"] == stream_id, timeout=10)
        await asyncio.sleep(0.2)  # the stream log's finish is behind the end
        ended.set()
        return state

    monkeypatch.setattr(sessions, "join_state", join_state)
    bob_ws = await connect(bob)
    joined = await bob_ws.request(
        {"type": "join", "session_id": session_id, "since_seq": ack["message"]["seq"]}
    )
    assert ended.is_set()
    in_history = [m for m in joined.get("history", []) if m.get("reply_to") == ack["message"]["id"]]
    listed = [s for s in joined["streams"] if s["stream_id"] == stream_id]
    assert in_history or listed, joined
    if listed:
        resumed = await bob_ws.request(
            {"type": "resume", "session_id": session_id, "stream_id": stream_id, "offset": 0}
        )
        assert resumed["type"] == "ack"
        await bob_ws.next("stream.end", lambda f: f["stream_id"] == stream_id, timeout=10)
        await bob_ws.request({"type": "ping"})
        ours = [f for f in bob_ws.seen if f.get("stream_id") == stream_id]
        indexes = sorted(f["index"] for f in ours if f["type"] == "stream.delta")
        assert [f["type"] for f in ours].count("stream.end") == 1
        assert "".join(
            f["text"]
            for f in sorted(
                (f for f in ours if f["type"] == "stream.delta"), key=lambda f: f["index"]
            )
        ) == "".join(tokens)
        assert indexes == sorted(set(indexes))
