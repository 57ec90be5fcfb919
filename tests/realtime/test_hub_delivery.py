"""The hub's delivery on the memory bus to bare connections: no sockets, no Redis.

The memory bus hands a publish to the hub at once, so what a connection was sent is in
its outbox when the publish returns: each test reads it with ``take()``, no waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest

from realtime.bus_memory import MemoryBus
from realtime.close_codes import CloseCode
from realtime.connection import Connection
from realtime.envelope import Envelope
from realtime.hub import Hub
from realtime.keys import Keys
from realtime.presence import PresenceChange
from realtime.presence_memory import MemoryPresence
from realtime.stream_log_memory import MemoryStreamLog

SESSION = "s1"


class _Meter:
    """Any of the hub's metrics (``realtime.metrics.HubMetrics``): counts nothing."""

    def inc(self, amount: float = 1) -> None: ...

    def dec(self, amount: float = 1) -> None: ...

    def set(self, value: float) -> None: ...

    def observe(self, amount: float) -> None: ...


class _Metrics:
    ws_connections = rooms = fanout_latency = frames_out = _Meter()
    bus_reconnects = bus_degraded = _Meter()


class Node:
    """One hub on the memory bus; ``stored`` stands in for the database."""

    def __init__(self) -> None:
        self.stored: list[dict[str, Any]] = []
        self.released: list[int | None] = []
        self.hub = Hub(
            bus_factory=MemoryBus,
            presence=MemoryPresence(),
            stream_log=MemoryStreamLog(60),
            fetch_messages_after=self._fetch_after,
            metrics=_Metrics(),
            keys=Keys("test"),
        )
        self.hub.on_released = self._on_released

    async def _fetch_after(self, session_id: str, after: int, limit: int) -> list[dict[str, Any]]:
        return [m for m in self.stored if m["seq"] > after][:limit]

    def _on_released(self, env: Envelope) -> None:
        self.released.append(env.seq)

    def connection(self, conn_id: str, user_id: str, *, family: str | None = None) -> Connection:
        conn = Connection(conn_id, user_id, user_id.title(), "user", None, 1000, lambda _: None)
        conn.family = family
        self.hub.register(conn)
        return conn

    async def join(self, conn: Connection, last_seq: int = 0) -> Connection:
        await self.hub.begin_join(conn, SESSION, presence=False)
        self.hub.finish_join(conn, SESSION, last_seq)
        return conn


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    node = Node()
    await node.hub.start()
    yield node
    await node.hub.close()


def sent(conn: Connection) -> list[dict[str, Any]]:
    batch, _ = conn.take()
    return [orjson.loads(text) for text in batch]


def message(seq: int) -> dict[str, Any]:
    return {"id": f"m{seq}", "seq": seq, "content": f"text {seq}"}


def seqs(frames: list[dict[str, Any]]) -> list[int]:
    return [f["message"]["seq"] for f in frames if f["type"] == "message"]


Publish = Callable[[Hub], Awaitable[None]]


@pytest.mark.parametrize(
    ("publish", "to_ada", "to_bob"),
    [
        pytest.param(lambda hub: hub.publish_message(SESSION, message(1)), 1, 1, id="message"),
        pytest.param(
            lambda hub: hub.publish_typing(SESSION, "ada", active=True),
            0,
            1,
            id="typing is not echoed to its sender",
        ),
        pytest.param(
            lambda hub: hub.publish_presence(PresenceChange(SESSION, "ada", "Ada", "join")),
            0,
            1,
            id="presence is not told to its subject",
        ),
        pytest.param(
            lambda hub: hub.publish_member(SESSION, "cy", "Cy", change="added"),
            1,
            1,
            id="member",
        ),
        pytest.param(
            lambda hub: hub.publish_message("another", message(1)), 0, 0, id="another room"
        ),
    ],
)
async def test_who_gets_an_event_of_the_room(
    node: Node, publish: Publish, to_ada: int, to_bob: int
) -> None:
    ada = await node.join(node.connection("c1", "ada"))
    bob = await node.join(node.connection("c2", "bob"))

    await publish(node.hub)

    assert (len(sent(ada)), len(sent(bob))) == (to_ada, to_bob)


@pytest.mark.parametrize(
    ("arrivals", "delivered"),
    [
        pytest.param([1, 2, 3], [1, 2, 3], id="in order"),
        pytest.param([2, 3, 1], [1, 2, 3], id="the first late"),
        pytest.param([3, 2, 1], [1, 2, 3], id="reversed"),
        pytest.param([1, 1, 2], [1, 2], id="a duplicate"),
    ],
)
async def test_messages_reach_members_in_seq_order_once(
    node: Node, arrivals: list[int], delivered: list[int]
) -> None:
    ada = await node.join(node.connection("c1", "ada"))

    for seq in arrivals:
        await node.hub.publish_message(SESSION, message(seq))

    assert seqs(sent(ada)) == delivered
    assert node.released == delivered


@pytest.mark.parametrize(
    ("last_seq", "before_finish", "after_finish", "delivered"),
    [
        pytest.param(0, [1, 2], [3], [1, 2, 3], id="nothing covered by the joined reply"),
        pytest.param(2, [1, 2, 3], [4], [3, 4], id="the reply covered 1 and 2"),
        pytest.param(5, [], [4, 5, 6], [6], id="older ones after the reply"),
    ],
)
async def test_a_join_hears_what_came_while_its_reply_was_prepared_after_last_seq(
    node: Node,
    last_seq: int,
    before_finish: list[int],
    after_finish: list[int],
    delivered: list[int],
) -> None:
    ada = node.connection("c1", "ada")
    await node.hub.begin_join(ada, SESSION, presence=False)
    for seq in before_finish:
        await node.hub.publish_message(SESSION, message(seq))
    assert sent(ada) == []  # held until the joined reply is queued

    node.hub.finish_join(ada, SESSION, last_seq)
    for seq in after_finish:
        await node.hub.publish_message(SESSION, message(seq))

    assert seqs(sent(ada)) == delivered


async def test_a_second_member_joining_later_starts_after_its_own_last_seq(node: Node) -> None:
    ada = await node.join(node.connection("c1", "ada"))
    await node.hub.publish_message(SESSION, message(1))
    bob = await node.join(node.connection("c2", "bob"), last_seq=1)

    await node.hub.publish_message(SESSION, message(2))

    assert (seqs(sent(ada)), seqs(sent(bob))) == ([1, 2], [2])


async def test_a_member_who_left_hears_nothing_more(node: Node) -> None:
    ada = await node.join(node.connection("c1", "ada"))
    bob = await node.join(node.connection("c2", "bob"))
    await node.hub.leave(bob, SESSION, presence=False)

    await node.hub.publish_message(SESSION, message(1))

    assert (seqs(sent(ada)), sent(bob)) == ([1], [])


@pytest.mark.parametrize(
    ("code", "family", "closed"),
    [
        pytest.param(
            CloseCode.TOKEN_EXPIRED, None, {"c1", "c2"}, id="every connection of the user"
        ),
        pytest.param(CloseCode.FORBIDDEN, "f1", {"c1"}, id="only the family's"),
    ],
)
async def test_disconnecting_a_user_closes_their_connections_with_the_code(
    node: Node, code: CloseCode, family: str | None, closed: set[str]
) -> None:
    conns = [
        node.connection("c1", "ada", family="f1"),
        node.connection("c2", "ada", family="f2"),
        node.connection("c3", "bob", family="f1"),
    ]

    await node.hub.disconnect_user("ada", code, "bye", family=family)

    assert {c.conn_id for c in conns if c.closing is not None} == closed
    assert {c.closing for c in conns if c.closing is not None} == {(code, "bye")}


async def test_a_revoked_membership_takes_the_user_out_of_the_room(node: Node) -> None:
    ada = await node.join(node.connection("c1", "ada"))
    bob = await node.join(node.connection("c2", "bob"))

    await node.hub.revoke_membership(SESSION, "bob")
    # The control's handler leaves the room in a task of the hub's: let it run.
    for _ in range(10):
        if SESSION not in bob.rooms:
            break
        await asyncio.sleep(0)
    await node.hub.publish_message(SESSION, message(1))

    assert SESSION not in bob.rooms
    assert (seqs(sent(ada)), seqs(sent(bob))) == ([1], [])
