from __future__ import annotations

from tests.conftest import LiveServer, TestUser
from tests.fakes.openrouter import FakeOpenRouter, Stream
from tests.stream.conftest import collect_stream
from tests.ws.conftest import Connect
from tests.wsclient import WSClient


async def test_resume_after_a_disconnect_loses_and_repeats_nothing(
    connect: Connect,
    room: tuple[TestUser, TestUser, str],
    fake_openrouter: FakeOpenRouter,
    live_server: LiveServer,
) -> None:
    ada, bob, session_id = room
    tokens = [f"t{i} " for i in range(60)]
    fake_openrouter.enqueue(Stream(tokens, delay_s=0.01))
    ada_ws, bob_ws = await connect(ada), await connect(bob)
    await ada_ws.request({"type": "join", "session_id": session_id})
    await bob_ws.request({"type": "join", "session_id": session_id})
    ack = await ada_ws.request({"type": "message", "session_id": session_id, "content": "go"})
    stream_id = ack["stream_id"]
    await bob_ws.next("stream.start")
    seen = [await bob_ws.next("stream.delta") for _ in range(3)]
    await bob_ws.close()

    bob_again, _ = await WSClient.connect(live_server.ws_url, bob.access_token)
    try:
        joined = await bob_again.request(
            {"type": "join", "session_id": session_id, "since_seq": ack["message"]["seq"]}
        )
        offset = seen[-1]["index"] + 1
        assert [s["stream_id"] for s in joined["streams"]] in ([stream_id], [])
        resumed = await bob_again.request(
            {"type": "resume", "session_id": session_id, "stream_id": stream_id, "offset": offset}
        )
        assert resumed["type"] == "ack"
        await bob_again.next("stream.end", lambda f: f["stream_id"] == stream_id, timeout=10)
        # What counts is what this connection got: every index from offset, once. Live
        # ones may come before the ack; the resume does not send them again.
        ours = [f for f in bob_again.seen if f.get("stream_id") == stream_id]
        rest = sorted((f for f in ours if f["type"] == "stream.delta"), key=lambda f: f["index"])
        end = ours[-1]
        assert end["type"] == "stream.end"
        indexes = [d["index"] for d in rest]
        assert indexes == list(range(offset, offset + len(rest)))
        after_ack = bob_again.seen[bob_again.seen.index(resumed) + 1 :]
        replayed = [
            f["index"]
            for f in after_ack
            if f.get("stream_id") == stream_id and f["type"] == "stream.delta"
        ]
        assert replayed == sorted(replayed)  # what the resume sends comes in order
        text = "".join(d["text"] for d in seen) + "".join(d["text"] for d in rest)
        assert text == "".join(tokens)
        assert end["message"]["content"] == text
    finally:
        await bob_again.close()
    whole = await collect_stream(ada_ws, stream_id)
    assert whole.text == "".join(tokens)


async def test_resuming_an_ended_stream_replays_its_rest_then_it_is_not_found(
    connect: Connect,
    room: tuple[TestUser, TestUser, str],
    fake_openrouter: FakeOpenRouter,
    live_server: LiveServer,
) -> None:
    ada, _, session_id = room
    fake_openrouter.enqueue(Stream(["a", "b", "c"], comments=False))
    ada_ws = await connect(ada)
    await ada_ws.request({"type": "join", "session_id": session_id})
    ack = await ada_ws.request({"type": "message", "session_id": session_id, "content": "go"})
    first = await collect_stream(ada_ws, ack["stream_id"])
    assert first.end is not None

    # On another connection: this one was sent every index and the end once already,
    # and a resume here sends none of them again (once per connection).
    ada_ws = await connect(ada)
    await ada_ws.request({"type": "join", "session_id": session_id})
    ack2 = await ada_ws.request(
        {"type": "resume", "session_id": session_id, "stream_id": ack["stream_id"], "offset": 1}
    )
    assert ack2["type"] == "ack"
    replayed = [await ada_ws.next("stream.delta") for _ in range(len(first.deltas) - 1)]
    end = await ada_ws.next("stream.end")
    assert "".join(d["text"] for d in replayed) == first.text[len(first.deltas[0]["text"]) :]
    assert end["message"] == first.end["message"]

    missing = await ada_ws.request(
        {"type": "resume", "session_id": session_id, "stream_id": "nope", "offset": 0}
    )
    assert (missing["type"], missing["code"]) == ("error", "not_found")


async def test_a_member_who_joins_mid_stream_and_resumes_gets_every_index_once(
    connect: Connect,
    room: tuple[TestUser, TestUser, str],
    fake_openrouter: FakeOpenRouter,
) -> None:
    # Bob joins while the answer streams: live deltas reach him at once, and the
    # resume docs/protocol.md then tells him to send must not send them again.
    ada, bob, session_id = room
    tokens = [f"t{i} " for i in range(60)]
    fake_openrouter.enqueue(Stream(tokens, delay_s=0.01))
    ada_ws = await connect(ada)
    await ada_ws.request({"type": "join", "session_id": session_id})
    ack = await ada_ws.request({"type": "message", "session_id": session_id, "content": "go"})
    stream_id = ack["stream_id"]
    for _ in range(5):
        await ada_ws.next("stream.delta")

    bob_ws = await connect(bob)
    joined = await bob_ws.request({"type": "join", "session_id": session_id})
    assert [s["stream_id"] for s in joined["streams"]] == [stream_id]
    for _ in range(3):  # live ones, before the resume
        await bob_ws.next("stream.delta")
    resumed = await bob_ws.request(
        {"type": "resume", "session_id": session_id, "stream_id": stream_id, "offset": 0}
    )
    assert resumed["type"] == "ack"
    end = await bob_ws.next("stream.end", lambda f: f["stream_id"] == stream_id, timeout=10)

    got = [f for f in bob_ws.seen if f["type"] == "stream.delta"]
    indexes = sorted(f["index"] for f in got)
    assert indexes == list(range(len(got)))  # each once, none missing
    text = "".join(f["text"] for f in sorted(got, key=lambda f: f["index"]))
    assert text == "".join(tokens) == end["message"]["content"]
