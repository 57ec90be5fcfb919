"""PostgreSQL faults through the proxy (faults 5, 6 and 7 of issue 14)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.chaos.conftest import MakeWorld, World
from tests.chaos.harness import (
    assert_acked_once_in_order,
    assert_no_tracebacks,
    assert_streams_whole,
    eventually,
    stored_messages,
    streams_seen,
    timed,
)
from tests.fakes.openrouter import Stream
from tests.wsclient import WSClient

pytestmark = [pytest.mark.slow, pytest.mark.chaos, pytest.mark.timeout(180)]

# What "bounded" means here, with room for a loaded CI machine: the issue asks for a
# readiness answer within about 1 s and a database wait of a few seconds at most.
READYZ_S = 3.0
DB_WAIT_S = 10.0


async def rest_outage_answers(w: World) -> list[tuple[str, int, str]]:
    """What a few REST calls answer now: (what, status, error code)."""
    owner = w.owner
    answers = []
    async with httpx.AsyncClient(base_url=w.nodes[0].http_url, timeout=30) as http:
        calls = [
            ("history", http.get(f"/v1/sessions/{w.session_id}/messages", headers=owner.headers)),
            ("sessions", http.get("/v1/sessions", headers=owner.headers)),
            ("create", http.post("/v1/sessions", json={"title": "x"}, headers=owner.headers)),
            (
                "post",
                http.post(
                    f"/v1/sessions/{w.session_id}/messages",
                    json={"content": "rest", "reply": "none"},
                    headers=owner.headers,
                ),
            ),
        ]
        for what, call in calls:
            response, took = await timed(call)
            assert took < DB_WAIT_S, (what, took)
            code = (response.json().get("error") or {}).get("code", "")
            answers.append((what, response.status_code, code))
    return answers


async def test_an_answer_ending_while_the_database_is_down_ends_with_an_error_and_is_stored_later(
    world: MakeWorld,
) -> None:
    # Fault 5: the database is gone when an answer ends. Every member must still get
    # the end (an error: nothing could be stored), and the answer is stored when the
    # database is back.
    w = await world(n_nodes=2, members=4)
    w.fake.default = Stream([f"d{i} " for i in range(80)], delay_s=0.03)
    ack = await w.members[0].ask("answer into the outage")
    stream_id = ack["stream_id"]
    for member in w.members:
        await member.ws.next("stream.delta", timeout=10)
    w.proxy.down()
    try:
        for member in w.members:
            await member.end_of(stream_id, timeout=30)
        ends = assert_streams_whole(w.members, [stream_id])
    finally:
        w.proxy.heal()
    end = ends[stream_id]
    assert end["finish_reason"] == "error", end
    assert end["error"]["code"] == "unavailable", end
    seen = streams_seen(w.members[1].ws.seen, w.session_id)[stream_id]
    text = "".join(seen.text[i] for i in sorted(seen.text))
    assert text == "".join(f"d{i} " for i in range(80))

    async def stored() -> bool:
        messages = await stored_messages(w.nodes[1], w.owner, w.session_id)
        answers = [m for m in messages if m.get("reply_to") == ack["message"]["id"]]
        return len(answers) == 1 and answers[0]["content"] == text

    await eventually(stored, 30, "the answer stored once the database is back")
    assert_no_tracebacks(*w.nodes)


async def test_a_database_that_refuses_connections_is_unavailable_never_internal(
    world: MakeWorld,
) -> None:
    # Fault 6: an outage is `unavailable` (503, or close 1013/1011), never 500/internal.
    w = await world(n_nodes=2, members=2)
    w.proxy.down()
    try:
        for what, status, code in await rest_outage_answers(w):
            assert (status, code) == (503, "unavailable"), what
        reply, _ = await timed(w.members[0].say("into the void", timeout=DB_WAIT_S))
        assert reply["type"] == "error" and reply["code"] == "unavailable", reply
        await assert_handshake_unavailable_or_welcome(w)
        ready = await readyz(w)
        assert ready[0] == 503, ready
    finally:
        w.proxy.heal()
    again = await w.members[0].say("back", timeout=30)
    assert again["type"] == "ack", again
    await w.members[1].message(again["message"]["id"], timeout=15)
    assert_no_tracebacks(*w.nodes)


async def assert_handshake_unavailable_or_welcome(w: World) -> None:
    """A new connection during the outage: a welcome (the caller is cached), an HTTP 503,
    or an upgrade closed with 1013 (try again later) or 1011; never a 500."""
    try:
        ws, _ = await asyncio.wait_for(
            WSClient.connect(w.nodes[1].ws_url, w.users[1].access_token), DB_WAIT_S
        )
    except InvalidStatus as exc:
        assert exc.response.status_code == 503, exc
    except ConnectionError:
        pass  # closed before the welcome: the close code is checked below
    else:
        await ws.close()
        return
    # Closed after the upgrade: read the close code from a raw connection.
    headers = {"Authorization": f"Bearer {w.users[1].access_token}"}
    try:
        async with connect(w.nodes[1].ws_url, additional_headers=headers) as raw:
            with pytest.raises(Exception):  # noqa: B017 - only the close code matters
                while True:
                    await asyncio.wait_for(raw.recv(), DB_WAIT_S)
            assert raw.close_code in (1013, 1011), raw.close_code
    except InvalidStatus as exc:
        assert exc.response.status_code == 503, exc


async def readyz(w: World) -> tuple[int, float]:
    async with httpx.AsyncClient(timeout=30) as http:
        response, took = await timed(http.get(w.nodes[0].http_url + "/readyz"))
    return response.status_code, took


async def test_a_database_that_stops_answering_costs_bounded_waits(world: MakeWorld) -> None:
    # Fault 7: a database that hangs (packets go nowhere) must not hang the server:
    # readiness answers in about a second, REST and frames answer `unavailable` within a
    # few seconds, and a ping is never stuck behind a frame waiting for the database.
    w = await world(n_nodes=2, members=2)
    w.proxy.blackhole()
    try:
        status, took = await readyz(w)
        assert status == 503 and took < READYZ_S, (status, took)
        member = w.members[0]
        message = asyncio.create_task(member.say("slow one", timeout=60))
        await asyncio.sleep(0.2)  # the message frame is in the server first
        started = time.monotonic()
        pong = await member.ws.request({"type": "ping"}, timeout=DB_WAIT_S)
        assert pong["type"] == "pong" and time.monotonic() - started < 3.0
        reply, took = await timed(message)
        assert reply["type"] == "error" and reply["code"] == "unavailable", reply
        assert took < DB_WAIT_S + 1, took
        for what, status, code in await rest_outage_answers(w):
            assert (status, code) == (503, "unavailable"), what
    finally:
        w.proxy.heal()
    again = await w.members[0].say("back", timeout=30)
    assert again["type"] == "ack", again
    await w.members[1].message(again["message"]["id"], timeout=15)
    status, _ = await readyz(w)
    assert status == 200
    assert_no_tracebacks(*w.nodes)


async def test_a_slow_database_still_delivers_everything_in_order(world: MakeWorld) -> None:
    # Not a fault of the list but its invariant: a database that answers slowly
    # (50 ms a reply) delays messages and never reorders or drops them.
    w = await world(n_nodes=2, members=4)
    w.proxy.slow_s = 0.05
    acks = await asyncio.gather(*(m.say(f"slow {m.user.name}", timeout=30) for m in w.members))
    w.proxy.heal()
    for member in w.members:
        for ack in acks:
            await member.message(ack["message"]["id"], timeout=15)
    assert_acked_once_in_order(w.members, list(acks))
