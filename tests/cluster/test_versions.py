"""Versions across two real nodes (issue 16, item 4): a member on the other node sees
a regenerated answer and a switch of versions live (``message.version``), and a
regeneration on one node stops the answer it replaces running on the other."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.cluster.conftest import answered_room
from tests.fakes.openrouter import FakeOpenRouter, Stream, fake_openrouter
from tests.stream.conftest import collect_stream

__all__ = ["fake_openrouter"]
pytestmark = pytest.mark.slow


async def test_versions_reach_the_member_on_the_other_node(
    cluster: Callable[..., Any], fake_openrouter: FakeOpenRouter
) -> None:
    room = await answered_room(cluster, fake_openrouter, "versions")
    session_id, ada_ws, bob_ws = room.session_id, room.ada_ws, room.bob_ws
    try:
        # The first answer runs on node a and hangs; Bob, on node b, asks for another.
        fake_openrouter.enqueue(Stream(["partial "], hang_after=True), Stream(["second"]))
        ack = await ada_ws.request({"type": "message", "session_id": session_id, "content": "go"})
        await bob_ws.next("stream.delta", lambda f: f["stream_id"] == ack["stream_id"])
        again = await bob_ws.request(
            {"type": "regenerate", "session_id": session_id, "message_id": ack["message"]["id"]}
        )
        assert again["type"] == "ack", again

        # Node a stops the answer it was writing; node b's answer replaces it.
        stopped = await ada_ws.next("stream.end", lambda f: f["stream_id"] == ack["stream_id"])
        assert (stopped["finish_reason"], stopped["message"]) == ("cancelled", None)
        streamed = await collect_stream(ada_ws, again["stream_id"], timeout=20)
        assert streamed.end is not None
        answer = streamed.end["message"]
        assert (answer["content"], answer["version_count"]) == ("second", 1)

        # Bob regenerates it on node b: Ada, on node a, sees the new version.
        fake_openrouter.enqueue(Stream(["third"]))
        await bob_ws.request(
            {"type": "regenerate", "session_id": session_id, "message_id": answer["id"]}
        )
        shown = await ada_ws.next(
            "message.version", lambda f: f["message"]["id"] == answer["id"], timeout=20
        )
        assert (shown["message"]["content"], shown["message"]["version"]) == ("third", 2)

        # Ada switches back on node a; Bob sees it on node b.
        await ada_ws.request(
            {
                "type": "select_version",
                "session_id": session_id,
                "message_id": answer["id"],
                "version": 1,
            }
        )
        seen = await bob_ws.next(
            "message.version",
            lambda f: f["message"]["id"] == answer["id"] and f["message"]["version"] == 1,
            timeout=10,
        )
        assert (seen["message"]["content"], seen["message"]["version_count"]) == ("second", 2)
    finally:
        await ada_ws.close()
        await bob_ws.close()
