"""The benchmark's Socket.IO + Redis peer (``bench/node/sio_server.js``) starts, shares a
room across two processes through Redis, and delivers what the load generator
(``bench/node/client.js``, protocol ``socketio``) sends, with the same counts the
fan-out steps check.

Opt-in: the peer's npm packages are a benchmark's, not the app's, and neither
``scripts/install`` nor CI installs them, so without ``npm ci`` in bench/node this
skips, even under ``PARLEY_REQUIRE_SERVICES=1``. Redis is required as usual.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path

import pytest

from bench._common import NODE_DIR, NodeClient
from tests.services import require_redis

pytestmark = [pytest.mark.slow, pytest.mark.redis]

if shutil.which("node") is None:
    pytest.skip("node is not installed (the peer is a Node.js server)", allow_module_level=True)
if not (NODE_DIR / "node_modules" / "socket.io").exists():
    pytest.skip(
        "opt-in: the Socket.IO peer's packages are missing; run `npm ci` in bench/node",
        allow_module_level=True,
    )

from bench.fanout_scaling import SioNode  # noqa: E402  (after the skips: it needs no node)


async def test_two_peer_nodes_share_a_room_and_deliver_every_event(tmp_path: Path) -> None:
    require_redis()
    key = f"parley-test-sio-{uuid.uuid4().hex[:10]}"
    nodes = [SioNode(f"sio{i}", key, tmp_path) for i in (1, 2)]
    client = NodeClient()
    try:
        for node in nodes:
            await node.start()
        await client.start()
        members = 6
        connected = await client.call(
            timeout_s=20,
            cmd="connect",
            protocol="socketio",
            urls=[node.url for node in nodes],
            tokens=[f"user-{n}" for n in range(members)],
            session_id="room-1",
        )
        assert connected["connected"] == members, connected
        # Senders all on node 1, members round-robin over both: half of what arrives
        # crossed Redis, so a peer that did not share the room would miss it.
        for kind, per_event in (("typing", members - 1), ("message", members)):
            result = await client.call(
                timeout_s=20,
                cmd="run",
                kind=kind,
                rate=50,
                seconds=0.5,
                senders=2,
                senders_on=0,
                grace_s=5,
            )
            assert result["sent"] > 0, result
            assert result["expected"] == result["sent"] * per_event, result
            assert result["delivered"] == result["expected"], result
            assert result["errors"] == 0, result
    finally:
        await client.stop()
        for node in nodes:
            node.stop()
    assert all(node.process is not None and node.process.poll() is not None for node in nodes)


async def test_the_peer_exits_when_its_parent_goes(tmp_path: Path) -> None:
    """Its stdin closing (the benchmark died) ends it: nothing is left behind."""
    require_redis()
    node = SioNode("sio", f"parley-test-sio-{uuid.uuid4().hex[:10]}", tmp_path)
    try:
        await node.start()
        assert node.process is not None and node.process.stdin is not None
        node.process.stdin.close()
        for _ in range(100):
            if node.process.poll() is not None:
                break
            await asyncio.sleep(0.05)
        assert node.process.poll() is not None, "the peer outlived its stdin"
    finally:
        node.stop()
