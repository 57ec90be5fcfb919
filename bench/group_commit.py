"""Stored messages into one busy room, through ``MessageService.post`` (issue 19).

    .venv/bin/python -m bench.group_commit [--database sqlite,postgresql]
        [--senders 20] [--rate 1000] [--seconds 5] [--nodes 1]

The store path alone, in one process, without sockets or fan-out: ``--senders``
members of one session post at ``--rate`` messages per second in all (open loop: each
sender keeps its schedule and waits for its previous post, as one connection handles
its frames in order). Reports stored messages per second, per-post latency (p50, p99)
and how many units of work stored them (distinct ``created_at``: a batch takes its
time once). Steadier than ``bench.fanout`` on a loaded machine; run it with
``PYTHONPATH=<another checkout>`` to measure that tree's service side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import distinct, func, select

from bench._common import fresh_database, seed_room
from db.engine import Database
from db.models import Message, SessionMember
from server.services.accounts import Principal
from server.services.messages import MessageService


async def run(url: str, senders: int, rate: float, seconds: float, nodes: int) -> dict[str, Any]:
    room = await seed_room(url, senders)
    session_id = uuid.UUID(room.session_id)
    # "Nodes": engines and services of their own (their own pools and group commits),
    # the senders dealt round-robin; their batches meet on the session row.
    databases = [Database(url, pool_size=10) for _ in range(nodes)]
    database = databases[0]
    try:
        async with database.read() as db:
            members = list(
                (
                    await db.execute(
                        select(SessionMember.user_id).where(SessionMember.session_id == session_id)
                    )
                ).scalars()
            )
        services = [MessageService(d, max_content_chars=4000) for d in databases]
        per_sender = rate / senders
        count = int(per_sender * seconds)
        latencies: list[float] = []
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.2

        async def sender(n: int, user_id: uuid.UUID) -> None:
            principal = Principal(user_id=user_id, name=f"u{n}", role="user", expires_at=None)
            for k in range(count):
                due = start + (k + n / senders) / per_sender
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                began = time.perf_counter()
                service = services[n % nodes]
                await service.post(principal, session_id, content=f"{n}:{k}", reply="none")
                # From when it was due: a post that waited for the previous one counts.
                latencies.append(time.perf_counter() - began + max(0.0, -delay))

        t0 = time.perf_counter()
        await asyncio.gather(*(sender(n, u) for n, u in enumerate(members)))
        took = time.perf_counter() - t0
        async with database.read() as db:
            units = (
                await db.execute(
                    select(func.count(distinct(Message.created_at))).where(
                        Message.session_id == session_id
                    )
                )
            ).scalar_one()
    finally:
        for engine in databases:
            await engine.dispose()
    latencies.sort()
    stored = len(latencies)
    return {
        "nodes": nodes,
        "offered_per_s": rate,
        "stored": stored,
        "stored_per_s": round(stored / took, 1),
        "p50_ms": round(latencies[stored // 2] * 1000, 2),
        "p99_ms": round(latencies[int(stored * 0.99)] * 1000, 2),
        "units_of_work": units,
    }


async def main_async(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="parley-gc-") as tmp:
        for kind in args.database.split(","):
            async with fresh_database(kind, Path(tmp)) as url:
                result = await run(url, args.senders, args.rate, args.seconds, args.nodes)
            print(json.dumps({"database": kind, **result}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", default="sqlite,postgresql")
    parser.add_argument("--senders", type=int, default=20)
    parser.add_argument("--rate", type=float, default=1000.0, help="messages/s into the room")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--nodes", type=int, default=1, help="services with their own engines")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
