"""Memory per idle authenticated WebSocket connection on one node (issue 3).

    .venv/bin/python -m bench.idle_connections [--connections 10000]

One ``parley serve`` process (memory bus, SQLite). A Node.js client
(``bench/node/client.js``) opens the connections, each its own user with a Bearer
token, and waits for each ``welcome``. Server RSS (``/proc/<pid>/statm``) is read after
a warm-up round of connections has come and gone, and again with all of them open:
the delta over N is the cost of one connection. The open-files limit is raised for
both processes. Updates the ``## Realtime fan-out (issue 3)`` section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import (
    REPORT,
    CpuWindow,
    NodeClient,
    ServerNode,
    fresh_database,
    raise_fd_limit,
    rss_bytes,
    seed_room,
    server_env,
)
from bench._fanout_report import RESULTS, render_and_write

WARM_UP = 500
IDLE_S = 5.0


async def settle_rss(pid: int, seconds: float = 2.0) -> int:
    """RSS once the process has been quiet for a moment (allocator arenas settle)."""
    await asyncio.sleep(seconds)
    return rss_bytes(pid)


async def run(connections: int, rooms: int, workdir: Path) -> dict[str, Any]:
    raise_fd_limit(2 * connections + 1000)
    fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    async with fresh_database("sqlite", workdir) as url:
        room = await seed_room(url, 1, extra_users=connections + WARM_UP)
        server = ServerNode("idle", server_env(url, None), workdir)
        await server.start()
        try:
            warm = NodeClient()
            await warm.start()
            reply = await warm.call(
                cmd="connect", urls=[server.ws_url], tokens=room.tokens[-WARM_UP:]
            )
            assert reply["connected"] >= 0.95 * WARM_UP, reply
            await warm.stop()
            before = await settle_rss(server.pid)

            client = NodeClient()
            await client.start()
            try:
                started = time.perf_counter()
                reply = await client.call(
                    cmd="connect",
                    urls=[server.ws_url],
                    tokens=room.tokens[:connections],
                    concurrency=100,
                )
                connect_s = time.perf_counter() - started
                # On a loaded machine a few handshakes time out on the database (503);
                # the cost per connection is over those that opened.
                assert reply["connected"] >= 0.9 * connections, reply
                opened = reply["connected"]
                after = await settle_rss(server.pid)
                window = CpuWindow({"server": server.pid})
                await asyncio.sleep(IDLE_S)
                idle_cpu = window.percent()["server"]
                still_open = (await client.call(cmd="count"))["open"]
            finally:
                await client.stop()
        finally:
            server.stop()
    result = {
        "setup": "memory bus, SQLite",
        "connections": connections,
        "opened": opened,
        "still_open": still_open,
        "rooms": rooms,
        "fd_limit": fd_limit,
        "rss_before_mib": before / 2**20,
        "rss_after_mib": after / 2**20,
        "per_connection_kib": (after - before) / opened / 1024,
        "connect_s": connect_s,
        "idle_s": IDLE_S,
        "idle_cpu": idle_cpu,
    }
    print(result, flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--report", type=Path, default=REPORT, help="the file to update")
    args = parser.parse_args()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="parley-idle-") as tmp:
        result = asyncio.run(run(args.connections, 0, Path(tmp)))
    render_and_write(idle=result, report=args.report)


if __name__ == "__main__":
    main()
