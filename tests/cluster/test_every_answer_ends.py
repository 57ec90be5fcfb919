"""Every answer ends with a ``stream.end`` at every member, its text stored: answers
asked back to back, on one node and on two, with nothing going wrong."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import pytest

from tests.cluster.conftest import joined, shared_room, upstream_of
from tests.fakes.openrouter import FakeOpenRouter, Stream, fake_openrouter
from tests.wsclient import Frame, WSClient

__all__ = ["fake_openrouter"]
pytestmark = pytest.mark.slow

# The contract's presence TTL rather than the 3 s the cluster tests use for their
# faults: on a loaded machine a node may stall past 2 s, be taken for dead and have
# its answers ended as "unavailable" by the other (a fault, not what is tested here).
NO_FAULT = {"presence_ttl_s": "30"}

# Short answers with a little time between tokens: each answer's last tokens are
# still being written when its generation finishes, which is where ends went missing.
ANSWER = Stream([f"t{i} " for i in range(12)], delay_s=0.002)


async def ask_back_to_back(
    askers: list[WSClient], session_id: str, count: int, *, in_flight: int
) -> list[str]:
    """``count`` questions, taking turns among ``askers``, each sent as soon as the
    previous one is acknowledged while at most ``in_flight`` answers run."""
    stream_ids: list[str] = []
    for i in range(count):
        if i >= in_flight:
            await ended_at_every_member(askers, stream_ids[i - in_flight], timeout_s=15)
        asker = askers[i % len(askers)]
        frame = {"type": "message", "session_id": session_id, "content": f"question {i}"}
        ack = await asker.request(frame, timeout=15)
        assert "stream_id" in ack, ack
        stream_ids.append(ack["stream_id"])
    return stream_ids


async def ended_at_every_member(members: list[WSClient], stream_id: str, timeout_s: float) -> None:
    for n, member in enumerate(members):
        try:
            await member.next("stream.end", lambda f: f["stream_id"] == stream_id, timeout_s)
        except TimeoutError:
            if not any(f.get("stream_id") == stream_id for f in member.seen if _is_end(f)):
                raise AssertionError(f"member {n} got no stream.end for {stream_id}") from None


def _is_end(frame: Frame) -> bool:
    return frame.get("type") == "stream.end"


async def missing_ends(member: WSClient, stream_ids: list[str], timeout_s: float) -> set[str]:
    """The streams among ``stream_ids`` whose ``stream.end`` ``member`` did not get."""
    wanted = set(stream_ids) - {f["stream_id"] for f in member.seen if _is_end(f)}

    async def all_ends() -> None:
        while wanted:
            end = await member.next("stream.end", timeout=timeout_s)
            wanted.discard(end["stream_id"])

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_ends(), timeout_s)
    return wanted


def check_texts(member: WSClient, stream_ids: list[str]) -> None:
    """Each stream's deltas came once each, in full, and spell the stored answer."""
    for stream_id in stream_ids:
        frames = [f for f in member.seen if f.get("stream_id") == stream_id]
        indices = [f["index"] for f in frames if f["type"] == "stream.delta"]
        assert sorted(indices) == list(range(len(indices))), (stream_id, indices)
        (end,) = [f for f in frames if f["type"] == "stream.end"]
        text = "".join(
            f["text"]
            for f in sorted(
                (f for f in frames if f["type"] == "stream.delta"), key=lambda f: f["index"]
            )
        )
        assert end["finish_reason"] == "stop", end
        assert end["message"] is not None and end["message"]["content"] == text
        assert text == "".join(ANSWER.tokens)


async def assert_every_member_got_every_end(
    members: list[WSClient], stream_ids: list[str], timeout_s: float
) -> None:
    missing = [await missing_ends(m, stream_ids, timeout_s) for m in members]
    assert missing == [set()] * len(members), [len(m) for m in missing]
    for member in members:
        check_texts(member, stream_ids)
        running: Frame = await member.request({"type": "join", "session_id": _session(member)})
        assert running["streams"] == []


def _session(member: WSClient) -> str:
    return str(next(f["session_id"] for f in member.seen if f.get("type") == "joined"))


async def test_answers_asked_back_to_back_on_one_node_all_end_at_every_member(
    cluster: Callable[..., Any], fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.default = ANSWER
    node = await cluster("a", **NO_FAULT, **upstream_of(fake_openrouter))
    ada, bob, session_id = await shared_room(node, "one node")
    ada_ws, bob_ws = await joined(node, ada, session_id), await joined(node, bob, session_id)
    try:
        stream_ids = await ask_back_to_back([ada_ws], session_id, 60, in_flight=60)
        await assert_every_member_got_every_end([ada_ws, bob_ws], stream_ids, timeout_s=30)
    finally:
        await ada_ws.close()
        await bob_ws.close()


@pytest.mark.timeout(120)  # about 40 s alone; the margin is for a loaded machine
async def test_200_answers_back_to_back_on_two_nodes_all_end_at_every_member(
    cluster: Callable[..., Any], fake_openrouter: FakeOpenRouter
) -> None:
    fake_openrouter.default = ANSWER
    env = {**NO_FAULT, **upstream_of(fake_openrouter)}
    node_a, node_b = await cluster("a", **env), await cluster("b", **env)
    ada, bob, session_id = await shared_room(node_a, "two nodes")
    members = [await joined(node_a, ada, session_id), await joined(node_b, bob, session_id)]
    try:
        stream_ids = await ask_back_to_back(members, session_id, 200, in_flight=16)
        await assert_every_member_got_every_end(members, stream_ids, timeout_s=30)
    finally:
        for member in members:
            await member.close()
