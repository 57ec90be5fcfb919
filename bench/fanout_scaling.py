"""Fan-out across 1, 2, 4 Parley nodes on Redis, beside our own Socket.IO + Redis peer
(issue 19).

    .venv/bin/python -m bench.fanout --nodes 1,2,4 [--peer socketio] [--seconds 3]
    .venv/bin/python -m bench.fanout_scaling [the same options]

Every setup is the ``--placement`` run of ``bench.fanout``: a room of 200 members
spread round-robin over the nodes, every one of the 20 senders a member on node 1, the
same rate steps, the same Node.js load generator (``bench/node/client.js``). Parley's
nodes are ``parley serve`` processes with ``REDIS_URL`` set, on one PostgreSQL
database, one node included (its events go through Redis as well), so the node count
is the only thing that changes. The peer is ``bench/node/sio_server.js``: Socket.IO
4 with ``@socket.io/redis-adapter``, its channels under a key of this run's own. The
setups alternate (Parley 1, peer 1, Parley 2, peer 2, Parley 4) so that a loaded
machine disturbs both alike.

Each step reads every process's CPU from ``/proc/<pid>/stat`` (utime + stime over
the step) and reports it in cores; efficiency is deliveries per server CPU-second,
the servers summed. The shared Redis's CPU is shown too, but it also serves whatever
else runs on the machine. The run is bounded (``--budget-s``, 540 s by default: the
steps left when it runs out are skipped and the report says so), and every process
it started is killed on the way out: an exception, Ctrl-C or SIGTERM included.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import redis

from bench._common import (
    NODE_DIR,
    REDIS_URL,
    REPORT,
    CpuWindow,
    NodeClient,
    Room,
    ServerNode,
    cpu_seconds,
    fresh_database,
    seed_room,
    server_env,
)
from bench._fanout_report import SCALING_RESULTS, render_scaling_and_write
from bench.fanout import HELD_P99_MS, LIMITS, MESSAGE_TARGETS, SENDERS, TYPING_TARGETS, held

GRACE_S = 3
# Past bench.fanout's highest step: on a quiet machine two nodes held 200,000/s, and the
# comparison with the peer needs a ceiling. The steps stop at saturation anyway.
SCALING_TYPING_TARGETS = [*TYPING_TARGETS, 250_000, 300_000]
BUDGET_S = 540.0
# Every process this run started, so that nothing outlives it (see _kill_leftovers).
_STARTED: list[subprocess.Popen[bytes] | asyncio.subprocess.Process] = []


def _kill_leftovers() -> None:
    """The last line of defence: whatever the ``finally`` blocks did not stop."""
    for process in _STARTED:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)


atexit.register(_kill_leftovers)


def sio_available() -> bool:
    return (NODE_DIR / "node_modules" / "socket.io").exists()


class SioNode:
    """One ``bench/node/sio_server.js`` process; it exits when its stdin closes."""

    def __init__(self, name: str, key: str, log_dir: Path) -> None:
        self.name = name
        self.key = key
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self, timeout_s: float = 20.0) -> None:
        self.process = self._spawn()
        _STARTED.append(self.process)
        assert self.process.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.process.stdout.readline), timeout_s)
        if not line:
            raise RuntimeError(f"{self.name} exited: {self.log_path.read_text()[-2000:]}")
        self.port = int(orjson.loads(line)["port"])

    def _spawn(self) -> subprocess.Popen[bytes]:
        command = ["node", str(NODE_DIR / "sio_server.js"), "--redis", REDIS_URL, "--key", self.key]
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, cwd=NODE_DIR
            )

    def stop(self) -> None:
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.kill()
            process.wait(10)
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                pipe.close()


def redis_pid() -> int | None:
    """The shared Redis's pid, when it runs on this machine and /proc can read it."""
    with contextlib.suppress(Exception):
        client = redis.Redis.from_url(REDIS_URL)
        try:
            pid = int(client.info("server")["process_id"])
        finally:
            client.close()
        cpu_seconds(pid)
        return pid
    return None


class Budget:
    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.skipped: list[str] = []

    def left(self) -> float:
        return self.deadline - time.monotonic()


async def steps(
    client: NodeClient,
    server_pids: list[int],
    kind: str,
    members: int,
    seconds: float,
    budget: Budget,
    label: str,
) -> list[dict[str, Any]]:
    """``bench.fanout``'s steps with the senders on node 1, CPU in cores per process.

    A short step at the lowest rate first, not counted: Node.js's JIT and the first
    frames of a connection would otherwise land in the first step's p99. Stops past
    saturation (delivering under 90 % of the target rate), or after three steps in a
    row not held: on a loaded machine one disturbed step says little."""
    per_event = members - 1 if kind == "typing" else members
    pids = {f"server{i + 1}": pid for i, pid in enumerate(server_pids)} | {"client": client.pid}
    shared = redis_pid()
    if shared is not None:
        pids["redis"] = shared
    targets = SCALING_TYPING_TARGETS if kind == "typing" else MESSAGE_TARGETS
    warm = {"rate": targets[0] / per_event, "seconds": 1.0, "senders": SENDERS, "senders_on": 0}
    await client.call(cmd="run", kind=kind, grace_s=GRACE_S, **warm)
    await asyncio.sleep(0.5)
    done: list[dict[str, Any]] = []
    misses = 0
    for target in targets:
        if budget.left() < seconds + GRACE_S + 5:
            budget.skipped.append(f"{label} {kind} from {target:,}/s")
            break
        window = CpuWindow(pids)
        result = await client.call(
            cmd="run",
            kind=kind,
            rate=target / per_event,
            seconds=seconds,
            senders=SENDERS,
            senders_on=0,
            grace_s=GRACE_S,
        )
        result["target_deliveries"] = target
        result["cores"] = {name: pct / 100 for name, pct in window.percent().items()}
        server_cores = sum(v for k, v in result["cores"].items() if k.startswith("server"))
        result["efficiency"] = result["delivery_rate"] / server_cores if server_cores else 0.0
        result["held"] = held(result)
        done.append(result)
        print(json.dumps({"setup": label, **result}), flush=True)
        misses = 0 if result["held"] else misses + 1
        if result["delivery_rate"] < 0.9 * target or misses >= 3:
            break
        await asyncio.sleep(1.0)  # let queues drain between steps
    return done


async def parley_setup(
    nodes: int, kind: str, url: str, room: Room, args: argparse.Namespace, workdir: Path
) -> list[dict[str, Any]]:
    env = server_env(url, REDIS_URL, DB_POOL_SIZE="4", **LIMITS)
    servers = [ServerNode(f"parley{nodes}-{i + 1}", env, workdir) for i in range(nodes)]
    client = NodeClient()
    try:
        for server in servers:
            await server.start()
            assert server.process is not None
            _STARTED.append(server.process)
        await client.start()
        assert client.process is not None
        _STARTED.append(client.process)
        connected = await client.call(
            cmd="connect",
            urls=[s.ws_url for s in servers],
            tokens=room.tokens,
            session_id=room.session_id,
        )
        assert connected["connected"] == len(room.tokens), connected
        label = f"parley x{nodes}"
        pids = [s.pid for s in servers]
        return await steps(client, pids, kind, len(room.tokens), args.seconds, args.budget, label)
    finally:
        await client.stop()
        for server in servers:
            server.stop()


async def sio_setup(
    nodes: int, kind: str, members: int, args: argparse.Namespace, workdir: Path
) -> list[dict[str, Any]]:
    key = f"parley-bench-sio-{uuid.uuid4().hex[:10]}"  # this setup's own channels
    servers = [SioNode(f"sio{nodes}-{i + 1}", key, workdir) for i in range(nodes)]
    client = NodeClient()
    try:
        for server in servers:
            await server.start()
        await client.start()
        assert client.process is not None
        _STARTED.append(client.process)
        connected = await client.call(
            cmd="connect",
            protocol="socketio",
            urls=[s.url for s in servers],
            tokens=[f"user-{n}" for n in range(members)],
            session_id=f"room-{uuid.uuid4().hex[:8]}",
        )
        assert connected["connected"] == members, connected
        label = f"socketio x{nodes}"
        pids = [s.pid for s in servers]
        return await steps(client, pids, kind, members, args.seconds, args.budget, label)
    finally:
        await client.stop()
        for server in servers:
            server.stop()


def best(steps_run: list[dict[str, Any]]) -> dict[str, Any] | None:
    held_steps = [s for s in steps_run if s["held"]]
    return max(held_steps, key=lambda s: s["delivery_rate"]) if held_steps else None


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """The issue's two bars, per kind.

    Efficiency rises with the rate (frames queued for a member leave in one write), so
    one node's and two nodes' are compared at the same step: the highest both held.
    The maxima are compared as the highest step held, the measured rates of two held
    steps of the same target differing only by noise."""
    summary: dict[str, Any] = {}
    for kind in results["kinds"]:
        parley = {n: r.get(kind, []) for n, r in results["parley"].items()}
        peer = {n: r.get(kind, []) for n, r in results["socketio"].items()}
        row: dict[str, Any] = {}
        one = {s["target_deliveries"]: s for s in parley.get("1", []) if s["held"]}
        two = {s["target_deliveries"]: s for s in parley.get("2", []) if s["held"]}
        if both := sorted(one.keys() & two.keys()):
            target = both[-1]
            row["same_step"] = target
            row["two_over_one_efficiency"] = two[target]["efficiency"] / one[target]["efficiency"]
        peer_two = {s["target_deliveries"]: s for s in peer.get("2", []) if s["held"]}
        if both := sorted(two.keys() & peer_two.keys()):
            target = both[-1]
            row["peer_same_step"] = target
            row["two_over_peer_two_efficiency"] = (
                two[target]["efficiency"] / peer_two[target]["efficiency"]
            )
        peer_best = [b for b in map(best, peer.values()) if b]
        if two and peer_best:
            top = max(peer_best, key=lambda s: s["target_deliveries"])
            row["parley_two_step"] = max(two)
            row["socketio_step"] = top["target_deliveries"]
            row["socketio_nodes"] = next(n for n, r in peer.items() if top in r)
        summary[kind] = row
    return summary


async def run(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()
    results: dict[str, Any] = {
        "members": args.members,
        "seconds": args.seconds,
        "kinds": args.kinds,
        "held_p99_ms": HELD_P99_MS,
        "top_step": {"typing": max(SCALING_TYPING_TARGETS), "message": max(MESSAGE_TARGETS)},
        "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "parley": {},
        "socketio": {},
    }
    order = [("parley", n) for n in args.nodes] + [("socketio", n) for n in args.peer_nodes]
    order.sort(key=lambda setup: (setup[1], setup[0] != "parley"))  # alternate by node count
    with tempfile.TemporaryDirectory(prefix="parley-scaling-") as tmp:
        workdir = Path(tmp)
        async with fresh_database("postgresql", workdir) as url:
            room = await seed_room(url, args.members)
            # Kind by kind, every setup each time: when the budget runs out it cuts the
            # last kind's steps, not one setup's.
            for kind in args.kinds:
                for system, nodes in order:
                    runs = results[system].setdefault(str(nodes), {})
                    if system == "parley":
                        runs[kind] = await parley_setup(nodes, kind, url, room, args, workdir)
                    else:
                        runs[kind] = await sio_setup(nodes, kind, args.members, args, workdir)
    results["skipped"] = args.budget.skipped
    results["load"] = [load_before, os.getloadavg()]
    results["summary"] = summarize(results)
    return results


def parse_counts(text: str) -> list[int]:
    return sorted({int(part) for part in text.split(",") if part.strip()})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``bench.fanout`` hands over to this module."""
    parser.add_argument(
        "--nodes", type=parse_counts, help="Parley node counts on Redis, e.g. 1,2,4 (issue 19)"
    )
    parser.add_argument(
        "--peer", choices=["socketio"], help="also run our Socket.IO + Redis peer (issue 19)"
    )
    parser.add_argument(
        "--peer-nodes", type=parse_counts, default=[1, 2], help="the peer's node counts"
    )
    parser.add_argument(
        "--budget-s", type=float, default=BUDGET_S, help="the whole run's time bound"
    )


def main_with(args: argparse.Namespace) -> None:
    """Run what ``--nodes``/``--peer`` asked for; write the report unless ``--no-report``."""
    if args.render_only:
        render_scaling_and_write(report=args.report)
        return
    if args.peer and not sio_available():  # node_modules from before the peer's packages
        subprocess.run(["npm", "ci", "--silent"], cwd=NODE_DIR, check=True)
    args.nodes = args.nodes or [1, 2]
    args.peer_nodes = args.peer_nodes if args.peer else []
    args.kinds = args.kinds.split(",") if isinstance(args.kinds, str) else args.kinds
    args.budget = Budget(args.budget_s)
    # Ctrl-C cancels the run and its finally blocks stop every process, even when the
    # shell started this in the background with SIGINT ignored; SIGTERM does the same.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        results = asyncio.run(run(args))
    finally:
        _kill_leftovers()
    print(json.dumps({"summary": results["summary"], "skipped": results["skipped"]}), flush=True)
    SCALING_RESULTS.parent.mkdir(parents=True, exist_ok=True)
    SCALING_RESULTS.write_text(json.dumps(results, indent=1))
    if not args.no_report:
        render_scaling_and_write(results, report=args.report)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each rate step")
    parser.add_argument("--kinds", default="typing", help="typing, message or both")
    parser.add_argument("--report", type=Path, default=REPORT, help="the file to update")
    parser.add_argument("--no-report", action="store_true", help="print the results only")
    parser.add_argument(
        "--render-only", action="store_true", help="rewrite the section from the last results"
    )
    add_arguments(parser)
    main_with(parser.parse_args())


if __name__ == "__main__":
    main()
