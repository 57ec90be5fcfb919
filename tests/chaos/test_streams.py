"""Answers with no fault at all, and resuming them (faults 1 and 11 of issue 14)."""

from __future__ import annotations

import asyncio

import pytest

from tests.chaos.conftest import MakeWorld
from tests.chaos.harness import (
    Member,
    assert_acked_once_in_order,
    assert_answers_stored,
    assert_no_tracebacks,
    assert_streams_whole,
)
from tests.fakes.openrouter import Stream
from tests.wsclient import WSClient

pytestmark = [pytest.mark.slow, pytest.mark.chaos, pytest.mark.timeout(180)]


async def test_every_answer_ends_once_at_every_member_on_both_nodes(world: MakeWorld) -> None:
    # Fault 1: with REDIS_URL set, some members missed stream.end with no fault at all
    # (the end raced the last deltas over the bus). Many short answers, asked from both
    # nodes at once, make the race likely.
    w = await world(n_nodes=2, members=4)
    w.fake.default = Stream([f"t{i} " for i in range(15)], delay_s=0.0, comments=False)
    acks, said = [], []
    for _ in range(3):
        acks += await asyncio.gather(*(m.ask(f"q from {m.user.name}") for m in w.members))
        # Plain messages racing the answers' ends (which take their seq when stored).
        for _ in range(3):
            said += await asyncio.gather(*(m.say(f"hi from {m.user.name}") for m in w.members))
    stream_ids = [a["stream_id"] for a in acks]
    for member in w.members:
        for stream_id in stream_ids:
            await member.end_of(stream_id, timeout=30)
        # An ack says the message is stored, not that every member has it yet: the last
        # ones may still be on their way over the bus when the answers have all ended.
        for acked in acks + said:
            await member.message(acked["message"]["id"], timeout=30)

    ends = assert_streams_whole(w.members, stream_ids)
    assert all(e["finish_reason"] == "stop" for e in ends.values()), ends
    assert_acked_once_in_order(w.members, acks + said)
    await assert_answers_stored(w.nodes[1], w.owner, w.session_id, ends)
    assert_no_tracebacks(*w.nodes)


@pytest.mark.parametrize("to_node", [0, 1], ids=["to-the-answering-node", "to-the-other-node"])
async def test_a_member_who_reconnects_mid_answer_and_resumes_sees_each_index_once(
    world: MakeWorld, to_node: int
) -> None:
    # Fault 11: resume must replay no index twice, whichever node the member comes back
    # to, while live deltas keep arriving.
    w = await world(n_nodes=2, members=2)
    tokens = [f"r{i} " for i in range(150)]
    w.fake.default = Stream(tokens, delay_s=0.02)
    asker, leaver = w.members  # asker on node a, leaver on node b
    ack = await asker.ask("a long one")
    stream_id = ack["stream_id"]
    before = [await leaver.ws.next("stream.delta", timeout=10) for _ in range(5)]
    await leaver.close()

    again, _ = await WSClient.connect(w.nodes[to_node].ws_url, leaver.user.access_token)
    try:
        joined = await again.request(
            {"type": "join", "session_id": w.session_id, "since_seq": ack["message"]["seq"]}
        )
        assert joined["type"] == "joined", joined
        offset = before[-1]["index"] + 1
        resumed = await again.request(
            {"type": "resume", "session_id": w.session_id, "stream_id": stream_id, "offset": offset}
        )
        assert resumed["type"] == "ack", resumed
        end = await again.next("stream.end", lambda f: f["stream_id"] == stream_id, timeout=20)
        # The end must come once: nothing further for this stream after a short wait on
        # a ping round trip (the server answers in order).
        await again.request({"type": "ping"})
        # Everything the new connection got of the stream: live deltas that came
        # before the resume's ack are not sent again (once per connection).
        after = again.seen[again.seen.index(joined) + 1 :]
        ours = [f for f in after if f.get("stream_id") == stream_id]
        indexes = [f["index"] for f in ours if f["type"] == "stream.delta"]
        # Deltas may carry several tokens: the asker's count is the stream's length.
        await asker.end_of(stream_id)
        total = len(
            [
                f
                for f in asker.ws.seen
                if f.get("stream_id") == stream_id and f["type"] == "stream.delta"
            ]
        )
        assert indexes == list(range(offset, total)), indexes
        assert [f["type"] for f in ours].count("stream.end") == 1
        text = "".join(d["text"] for d in before) + "".join(
            f["text"] for f in ours if f["type"] == "stream.delta"
        )
        assert text == "".join(tokens) == end["message"]["content"]
    finally:
        await again.close()
    assert_streams_whole([asker], [stream_id])
    assert_no_tracebacks(*w.nodes)


async def test_members_joining_while_answers_run_miss_nothing(world: MakeWorld) -> None:
    # Members who join during an answer get its remaining deltas live and its one end;
    # those who were there from the start get all of it, on either node.
    w = await world(n_nodes=2, members=3)
    w.fake.default = Stream([f"j{i} " for i in range(60)], delay_s=0.02)
    ack = await w.members[0].ask("go")
    await w.members[1].ws.next("stream.delta", timeout=10)
    late = await Member.join(w.users[1], w.nodes[0], w.session_id)
    try:
        for member in [*w.members, late]:
            await member.end_of(ack["stream_id"])
        assert_streams_whole(w.members, [ack["stream_id"]])
        late_seen = [f for f in late.ws.seen if f.get("stream_id") == ack["stream_id"]]
        assert [f["type"] for f in late_seen].count("stream.end") == 1
        late_indexes = [f["index"] for f in late_seen if f["type"] == "stream.delta"]
        assert late_indexes == sorted(set(late_indexes))
    finally:
        await late.close()


async def test_an_answer_started_while_redis_is_down_reaches_the_other_node_whole(
    world: MakeWorld,
) -> None:
    # The soak's lost deltas, cause (a): the answer starts while Redis is down, so its
    # first deltas reach the answering node's members only. Once Redis is back (empty),
    # members on the other node, in the room all along, must still get every index
    # from 0, once and in order, and the one end: the writer rebuilds the log from its
    # own copy and their node fills them in from it.
    w = await world(n_nodes=2, members=2)
    w.fake.default = Stream([f"o{i} " for i in range(150)], delay_s=0.02)
    asker, other = w.members  # asker on node a, other on node b
    w.redis.stop()
    ack = await asker.ask("start in the dark")
    stream_id = ack["stream_id"]
    await asker.ws.next("stream.delta", timeout=10)
    await asyncio.sleep(0.5)
    await w.redis.start()
    for member in w.members:
        await member.end_of(stream_id, timeout=30)
    await other.ws.request({"type": "ping"})  # nothing more behind the end
    for member in w.members:
        seen = [f for f in member.ws.seen if f.get("stream_id") == stream_id]
        indexes = [f["index"] for f in seen if f["type"] == "stream.delta"]
        assert indexes == list(range(len(indexes))), (member.node.name, indexes)
        assert [f["type"] for f in seen].count("stream.end") == 1, member.node.name
        end = next(f for f in seen if f["type"] == "stream.end")
        text = "".join(f["text"] for f in seen if f["type"] == "stream.delta")
        assert end["message"]["content"] == text, member.node.name
    assert_no_tracebacks(*w.nodes)
