"""Fan-out of ``typing`` and stored ``message`` frames to a room of 200 (issue 3).

    .venv/bin/python -m bench.fanout [--members 200] [--seconds 4] [--only one|two]
        [--placement] [--kinds typing,message] [--no-report]

Real ``parley serve`` processes: one node (memory bus, SQLite), then two nodes
(Redis bus, PostgreSQL) with the receivers split between them. The receivers and
senders are one Node.js process (``bench/node/client.js``): sockets authenticate with
the Bearer header and join one session; a few of them send at a stepped rate while
every socket records delivery latency against the send time on the same clock. Each
step reports what the server and the client used of the CPU. Rate limits are raised
through settings (MESSAGES_PER_WINDOW, TYPING_PER_WINDOW) so that the limiter is not
what is measured. Writes the ``## Realtime fan-out (issue 3)`` section of
docs/benchmarks.md together with ``bench.idle_connections``.

``--placement`` (issue 19): on two nodes every sender is a member on node 1 while the
members are spread round-robin over both, so half of every delivery crosses Redis.
Each step reports its efficiency, deliveries per second of server CPU (summed over
the server processes), and the run ends with one node's best held efficiency against
two nodes', measured in the same run.

``--nodes 1,2,4`` and ``--peer socketio`` (issue 19): Parley on 1, 2 and 4 nodes on Redis
beside our own Socket.IO + Redis peer, in ``bench/fanout_scaling.py``, which writes its
own section.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

from bench._common import (
    REDIS_URL,
    REPORT,
    CpuWindow,
    NodeClient,
    ServerNode,
    fresh_database,
    seed_room,
    server_env,
)
from bench._fanout_report import RESULTS, render_and_write

TYPING_TARGETS = [
    10_000,
    25_000,
    50_000,
    75_000,
    100_000,
    150_000,
    200_000,
]  # deliveries per second
MESSAGE_TARGETS = [5_000, 10_000, 25_000, 50_000]
SENDERS = 20
HELD_P99_MS = 100.0
LIMITS = {
    # The benchmark measures fan-out, not the limiter: per-user limits far above the
    # rates the senders reach.
    "MESSAGES_PER_WINDOW": "1000000",
    "TYPING_PER_WINDOW": "1000000",
    "FRAMES_PER_WINDOW": "1000000",
    "JOINS_PER_WINDOW": "1000000",
    "SEND_QUEUE_FRAMES": "8192",
    "SEND_QUEUE_BYTES": "16777216",
}


async def run_steps(
    client: NodeClient,
    servers: list[ServerNode],
    kind: str,
    targets: list[int],
    members: int,
    seconds: float,
    senders_on: int | None = None,
) -> list[dict[str, Any]]:
    per_event = members - 1 if kind == "typing" else members
    steps = []
    for target in targets:
        rate = target / per_event
        pids = {f"server{i}": s.pid for i, s in enumerate(servers)} | {"client": client.pid}
        window = CpuWindow(pids)
        result = await client.call(
            cmd="run",
            kind=kind,
            rate=rate,
            seconds=seconds,
            senders=SENDERS,
            senders_on=senders_on,
            grace_s=5,
        )
        cpu = window.percent()
        result["target_deliveries"] = target
        result["cpu"] = cpu
        result["efficiency"] = efficiency(result)
        result["held"] = held(result)
        if kind == "message":  # stored messages per second into the room (issue 19)
            result["messages_per_s"] = result["delivery_rate"] / per_event
        steps.append(result)
        print(json.dumps(result), flush=True)
        if result["delivered"] < 0.5 * result["expected"]:
            break  # far past saturation: higher steps say nothing more
        await asyncio.sleep(1.0)  # let queues drain between steps
    return steps


def efficiency(result: dict[str, Any]) -> float:
    """Deliveries per second of server CPU: independent of how many cores there are."""
    server_cores = sum(v for k, v in result["cpu"].items() if k.startswith("server")) / 100
    return result["delivery_rate"] / server_cores if server_cores > 0 else 0.0


def best_held(steps: list[dict[str, Any]]) -> dict[str, Any] | None:
    held_steps = [s for s in steps if s["held"]]
    return max(held_steps, key=lambda s: s["delivery_rate"]) if held_steps else None


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """Best held step per setup and kind, and two nodes' efficiency over one node's."""
    summary: dict[str, Any] = {}
    for kind in ("typing", "message"):
        row: dict[str, Any] = {}
        for setup in ("one", "two"):
            best = best_held(results.get(setup, {}).get(kind, []))
            if best is not None:
                row[setup] = {"rate": best["delivery_rate"], "efficiency": best["efficiency"]}
        if "one" in row and "two" in row and row["one"]["efficiency"]:
            row["two_over_one"] = row["two"]["efficiency"] / row["one"]["efficiency"]
        # Step by step too: on a loaded machine few steps are held, and efficiency (CPU
        # used per delivery) can still be compared at the same offered rate.
        one = {s["target_deliveries"]: s for s in results.get("one", {}).get(kind, [])}
        two = {s["target_deliveries"]: s for s in results.get("two", {}).get(kind, [])}
        by_target = {
            target: two[target]["efficiency"] / one[target]["efficiency"]
            for target in sorted(one.keys() & two.keys())
            if one[target]["efficiency"]
        }
        if by_target:
            row["two_over_one_by_target"] = by_target
        if row:
            summary[kind] = row
    # Issue 19: stored fan-out against ephemeral fan-out, each setup in the same run.
    for setup in ("one", "two"):
        typing = summary.get("typing", {}).get(setup)
        message = summary.get("message", {}).get(setup)
        if typing and message and typing["rate"]:
            summary.setdefault("stored_over_ephemeral", {})[setup] = (
                message["rate"] / typing["rate"]
            )
    return summary


def held(result: dict[str, Any]) -> bool:
    return (
        result["delivered"] >= 0.999 * result["expected"]
        and result["p99_ms"] < HELD_P99_MS
        and result["delivery_rate"] >= 0.9 * result["target_deliveries"]
    )


async def one_node(
    members: int, seconds: float, workdir: Path, kinds: list[str], database: str = "sqlite"
) -> dict[str, Any]:
    async with fresh_database(database, workdir) as url:
        room = await seed_room(url, members)
        server = ServerNode("one", server_env(url, None, **LIMITS), workdir)
        await server.start()
        client = NodeClient()
        try:
            await client.start()
            connected = await client.call(
                cmd="connect", urls=[server.ws_url], tokens=room.tokens, session_id=room.session_id
            )
            assert connected["connected"] == members, connected
            typing = messages = []
            if "typing" in kinds:
                typing = await run_steps(
                    client, [server], "typing", TYPING_TARGETS, members, seconds
                )
            if "message" in kinds:
                messages = await run_steps(
                    client, [server], "message", MESSAGE_TARGETS, members, seconds
                )
        finally:
            await client.stop()
            server.stop()
    name = "SQLite" if database == "sqlite" else "PostgreSQL"
    return {"setup": f"one node, memory bus, {name}", "typing": typing, "message": messages}


async def two_nodes(
    members: int, seconds: float, workdir: Path, kinds: list[str], placement: bool
) -> dict[str, Any]:
    senders_on = 0 if placement else None
    async with fresh_database("postgresql", workdir) as url:
        room = await seed_room(url, members)
        env = server_env(url, REDIS_URL, DB_POOL_SIZE="10", **LIMITS)
        servers = [ServerNode(name, env, workdir) for name in ("a", "b")]
        client = NodeClient()
        try:
            for server in servers:
                await server.start()
            await client.start()
            connected = await client.call(
                cmd="connect",
                urls=[s.ws_url for s in servers],
                tokens=room.tokens,
                session_id=room.session_id,
            )
            assert connected["connected"] == members, connected
            typing = messages = []
            if "typing" in kinds:
                typing = await run_steps(
                    client, servers, "typing", TYPING_TARGETS, members, seconds, senders_on
                )
            if "message" in kinds:
                messages = await run_steps(
                    client, servers, "message", MESSAGE_TARGETS, members, seconds, senders_on
                )
        finally:
            await client.stop()
            for server in servers:
                server.stop()
    senders = "senders all on node 1" if placement else "senders split evenly"
    return {
        "setup": f"two nodes, Redis bus, PostgreSQL (receivers split evenly, {senders})",
        "typing": typing,
        "message": messages,
    }


async def main_async(args: argparse.Namespace) -> None:
    results: dict[str, Any] = {"members": args.members, "seconds": args.seconds}
    kinds = args.kinds.split(",")
    with tempfile.TemporaryDirectory(prefix="parley-fanout-") as tmp:
        workdir = Path(tmp)
        if args.only in (None, "one"):
            results["one"] = await one_node(
                args.members, args.seconds, workdir, kinds, args.database
            )
        if args.only in (None, "two"):
            results["two"] = await two_nodes(
                args.members, args.seconds, workdir, kinds, args.placement
            )
    results["summary"] = summarize(results)
    print(json.dumps({"summary": results["summary"]}), flush=True)
    if args.no_report:
        return
    render_and_write(fanout=results, report=args.report)


def main() -> None:
    from bench import fanout_scaling  # imports this module: here, not at the top

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each rate step")
    parser.add_argument("--only", choices=["one", "two"], help="run one setup only")
    parser.add_argument(
        "--placement",
        action="store_true",
        help="two nodes: every sender on node 1, members spread over both (issue 19)",
    )
    parser.add_argument("--kinds", default="typing,message", help="typing, message or both")
    parser.add_argument(
        "--database",
        choices=["sqlite", "postgresql"],
        default="sqlite",
        help="one node's database (issue 19; two nodes always share PostgreSQL)",
    )
    parser.add_argument(
        "--message-targets",
        help="stored-message steps, deliveries/s, comma-separated (issue 19: 200000 in a "
        "room of 200 is 1,000 messages/s)",
    )
    parser.add_argument("--report", type=Path, default=REPORT, help="the file to update")
    parser.add_argument(
        "--no-report", action="store_true", help="print the results only (short runs)"
    )
    parser.add_argument(
        "--render-only", action="store_true", help="rewrite the section from the last results"
    )
    # Issue 19: --nodes 1,2,4 (Parley on Redis) and --peer socketio, in their own module.
    fanout_scaling.add_arguments(parser)
    args = parser.parse_args()
    if args.message_targets:
        MESSAGE_TARGETS[:] = [int(t) for t in args.message_targets.split(",")]
    if args.nodes or args.peer:
        fanout_scaling.main_with(args)
        return
    if args.render_only:
        render_and_write(report=args.report)
        return
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
