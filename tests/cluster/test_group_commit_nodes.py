"""Group commit (issue 19) on two nodes: each node batches the room's messages that
queue on it, and the session row serializes the two nodes' batches, so seq stays
gapless and every member on either node sees the same order."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.cluster.conftest import Node, joined
from tests.conftest import TestUser, shared_room
from tests.wsclient import WSClient

pytestmark = pytest.mark.slow
PER_NODE = 4
EACH = 10


async def _room(node: Node, people: int) -> tuple[list[TestUser], str]:
    async with httpx.AsyncClient(base_url=node.http_url) as http:
        return await shared_room(http, [f"U{n}" for n in range(people)], title="two nodes")


async def _commits(node: Node) -> tuple[float, float]:
    """The node's units of work that stored members' messages, and the messages."""
    async with httpx.AsyncClient() as http:
        text = (await http.get(node.http_url + "/metrics")).text
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    name = "parley_message_commit_batch_size"
    return float(values[f"{name}_count"]), float(values[f"{name}_sum"])


async def test_batches_from_two_nodes_into_one_room_keep_seq_gapless_and_ordered(
    cluster: Callable[..., Any],
) -> None:
    node_a, node_b = await cluster("a"), await cluster("b")
    users, session_id = await _room(node_a, 2 * PER_NODE)
    sockets: list[WSClient] = []
    for n, user in enumerate(users):
        sockets.append(await joined(node_a if n < PER_NODE else node_b, user, session_id))
    try:

        async def send_all(n: int, ws: WSClient) -> list[int]:
            ids = [f"s{n}-{k}" for k in range(EACH)]
            for k, frame_id in enumerate(ids):
                await ws.send(
                    {
                        "type": "message",
                        "id": frame_id,
                        "session_id": session_id,
                        "content": f"{n}:{k}",
                        "reply": "none",
                    }
                )
            seqs = []
            for frame_id in ids:
                ack = await ws.next(where=lambda f, i=frame_id: f.get("id") == i, timeout=30)  # type: ignore[misc]
                assert ack["type"] == "ack", ack
                seqs.append(ack["message"]["seq"])
            return seqs

        acked = await asyncio.gather(*(send_all(n, ws) for n, ws in enumerate(sockets)))
        total = len(sockets) * EACH
        for seqs in acked:
            assert seqs == sorted(seqs)  # each sender's messages in its send order
        assert sorted(s for seqs in acked for s in seqs) == list(range(1, total + 1))
        for ws in sockets:
            frames = [await ws.next("message", timeout=30) for _ in range(total)]
            assert [f["message"]["seq"] for f in frames] == list(range(1, total + 1))
        # Both nodes committed them in fewer units of work than messages.
        commits = [await _commits(node) for node in (node_a, node_b)]
        assert [stored for _, stored in commits] == [PER_NODE * EACH] * 2
        assert all(units < stored for units, stored in commits), commits
    finally:
        for ws in sockets:
            await ws.close()
