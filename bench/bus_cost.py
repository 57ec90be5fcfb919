"""CPU per envelope on the Redis bus, batched against one PUBLISH per envelope (issue 19).

    .venv/bin/python -m bench.bus_cost [--envelopes 20000] [--per-turn 20]

Two ``RedisBus`` nodes in this process on the local Redis, both subscribed to one
room's channel; node A publishes ``typing``-sized envelopes, ``--per-turn`` of them per
event-loop turn (as 20 senders would), and waits until node B received them all. The
process's CPU time (publishing, reading, parsing, splitting) per envelope, and the
Redis server's (from ``INFO cpu``, shared with whatever else uses that Redis), are
printed for each mode, alternated over ``--rounds``. Less sensitive to a loaded
machine than the end-to-end fan-out: CPU time, not rates.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from typing import Any

from redis.asyncio import Redis

from bench._common import REDIS_URL
from realtime import keys
from realtime.bus_redis import RedisBus
from realtime.envelope import TYPING, Envelope, pack

CHANNEL = keys.room_channel("bench-room")


async def redis_cpu(client: Redis) -> float:
    info: dict[str, Any] = await client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def one_round(batched: bool, envelopes: int, per_turn: int) -> dict[str, float]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    received = 0
    done = asyncio.Event()

    def on_b(channel: str, data: bytes) -> None:
        nonlocal received
        received += 1
        if received >= envelopes:
            done.set()

    a = RedisBus(REDIS_URL, lambda c, d: None, prefix=prefix)
    b = RedisBus(REDIS_URL, on_b, prefix=prefix)
    if not batched:
        # The path before issue 19: one PUBLISH per envelope (still pipelined per turn).
        async def publish(channel: str, data: bytes) -> None:
            await a._batcher.execute(("PUBLISH", a._keys.rebase(channel), data))

        a.publish = publish  # type: ignore[method-assign]
    admin = Redis.from_url(REDIS_URL)
    await a.start()
    await b.start()
    await b.subscribe(CHANNEL)
    frame = json.dumps({"type": "typing", "session_id": "s" * 36, "user_id": "u" * 36})
    data = pack(Envelope(TYPING, "s" * 36, frame, user_id="u" * 36, sent_at=time.time()))
    try:
        redis_before = await redis_cpu(admin)
        cpu_before, wall_before = time.process_time(), time.perf_counter()
        for start in range(0, envelopes, per_turn):
            count = min(per_turn, envelopes - start)
            await asyncio.gather(*(a.publish(CHANNEL, data) for _ in range(count)))
        await asyncio.wait_for(done.wait(), 60)
        cpu = time.process_time() - cpu_before
        wall = time.perf_counter() - wall_before
        redis = await redis_cpu(admin) - redis_before
    finally:
        await a.close()
        await b.close()
        await admin.aclose()
    return {
        "process_us_per_envelope": 1e6 * cpu / envelopes,
        "redis_us_per_envelope": 1e6 * redis / envelopes,
        "envelopes_per_s": envelopes / wall,
    }


async def main_async(args: argparse.Namespace) -> None:
    results: dict[str, list[dict[str, float]]] = {"unbatched": [], "batched": []}
    for _ in range(args.rounds):
        for mode in ("unbatched", "batched"):
            result = await one_round(mode == "batched", args.envelopes, args.per_turn)
            results[mode].append(result)
            print(mode, json.dumps(result), flush=True)
    for mode, rounds in results.items():
        best = min(rounds, key=lambda r: r["process_us_per_envelope"])
        print(f"{mode}: best of {len(rounds)}: {json.dumps(best)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envelopes", type=int, default=20_000)
    parser.add_argument("--per-turn", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
