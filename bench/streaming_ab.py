"""Time to first token (or the relay rate), this working tree against a git revision.

    .venv/bin/python -m bench.streaming_ab [--baseline HEAD] [--database sqlite] [--rounds 100]
    .venv/bin/python -m bench.streaming_ab --relay [--tokens 20000] [--members 50] [--rounds 20]

On a small shared VM the figures of one ``bench.streaming`` run drift by a millisecond
from one run to the next, more than most changes move them. Here two ``parley serve``
processes run at once against one fake upstream: A is ``--baseline`` (checked out in a
temporary git worktree and put first on ``PYTHONPATH``), B is the working tree. Each
round asks both, alternating which goes first, over the WebSocket and then SSE. What
is printed is each path's p50 and, per path, the median of the paired differences
B - A: negative means the working tree is faster. Nothing is written to the docs.

``--relay``: the relay rate instead (``Fast(--tokens)``), as ``bench.streaming``
measures it, to 1 member and to the slowest of ``--members``: each round reads the
upstream directly, then relays through A and B (alternating which goes first), and
each relay is divided by that round's direct rate. Printed: each receiver's range and
median share of direct, and the median of the paired differences B - A (positive
means the working tree relays faster).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import subprocess
import tempfile
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
from websockets.asyncio.client import ClientConnection

from bench._common import ROOT, ServerNode, fresh_database, seed_room
from bench.streaming import (
    TTFT_TOKENS,
    answering_env,
    direct_round,
    fake_upstream,
    read_stream,
    sse_round,
    ws_member,
    ws_round,
)

WARM_ROUNDS = 5


async def compare(baseline_tree: Path, database: str, rounds: int, workdir: Path) -> None:
    async with AsyncExitStack() as stack:
        fake = await stack.enter_async_context(fake_upstream())
        nodes: dict[str, tuple[ServerNode, str, str]] = {}
        for name, code in (("A", baseline_tree), ("B", None)):
            extra = {"PYTHONPATH": str(code)} if code is not None else {}
            home = workdir / name
            home.mkdir()
            url = await stack.enter_async_context(fresh_database(database, home, code=code))
            room = await seed_room(url, 1)
            env = answering_env(url, fake, **extra)
            node = ServerNode(name, env, home)
            stack.callback(node.stop)
            await node.start()
            nodes[name] = (node, room.session_id, room.tokens[0])

        http = await stack.enter_async_context(httpx.AsyncClient(timeout=60))
        await fake.fast(http, TTFT_TOKENS)
        clients = {}
        askers = {}
        for name, (node, sid, token) in nodes.items():
            clients[name] = await stack.enter_async_context(
                httpx.AsyncClient(base_url=node.http_url, timeout=60)
            )
            askers[name] = await ws_member(node.ws_url, token, sid)
            stack.push_async_callback(askers[name].close)

        async def first_token(name: str, path: str) -> float:
            _, sid, token = nodes[name]
            if path == "ws":
                sent, ((first, _, _),) = await ws_round(askers[name], [], sid)
            else:
                sent, first, _, _ = await sse_round(clients[name], token, sid)
                await read_stream(askers[name])  # the asker is a member: it saw it too
            return first - sent

        samples: dict[str, list[float]] = {"direct": []}
        for index in range(WARM_ROUNDS + rounds):
            if index == WARM_ROUNDS:
                samples = {"direct": []}
                gc.collect()
                gc.freeze()
            sent, first, _, _ = await direct_round(http, fake.base_url)
            samples["direct"].append(first - sent)
            for path in ("ws", "sse"):
                for name in ("A", "B") if index % 2 == 0 else ("B", "A"):
                    samples.setdefault(f"{name}-{path}", []).append(await first_token(name, path))

    direct = statistics.median(samples["direct"])
    for key, values in samples.items():
        p50 = statistics.median(values)
        print(f"{key:8} p50 {p50 * 1000:6.2f} ms   added {(p50 - direct) * 1000:6.2f} ms")
    for path in ("ws", "sse"):
        paired = [b - a for a, b in zip(samples[f"A-{path}"], samples[f"B-{path}"], strict=True)]
        median = statistics.median(paired) * 1000
        print(f"B - A, {path}: {median:+.2f} ms (median of paired rounds)")


async def compare_relay(
    baseline_tree: Path, database: str, rounds: int, tokens: int, members: int, workdir: Path
) -> None:
    async with AsyncExitStack() as stack:
        fake = await stack.enter_async_context(fake_upstream())
        # Per node: a room of one (its owner opens it) and a room of ``members``.
        nodes: dict[str, tuple[tuple[str, ClientConnection], tuple[str, list[ClientConnection]]]]
        nodes = {}
        for name, code in (("A", baseline_tree), ("B", None)):
            extra = {"PYTHONPATH": str(code)} if code is not None else {}
            home = workdir / name
            home.mkdir()
            url = await stack.enter_async_context(fresh_database(database, home, code=code))
            room = await seed_room(url, members)
            node = ServerNode(name, answering_env(url, fake, **extra), home)
            stack.callback(node.stop)
            await node.start()
            print(f"{name}: pid {node.pid}", flush=True)
            headers = {"Authorization": f"Bearer {room.tokens[0]}"}
            async with httpx.AsyncClient(base_url=node.http_url, headers=headers) as rest:
                created = await rest.post("/v1/sessions", json={"title": "solo"})
                solo_sid = created.raise_for_status().json()["data"]["id"]
            solo = await ws_member(node.ws_url, room.tokens[0], solo_sid)
            stack.push_async_callback(solo.close)
            sockets = []
            for token in room.tokens:
                sockets.append(await ws_member(node.ws_url, token, room.session_id))
                stack.push_async_callback(sockets[-1].close)
            nodes[name] = ((solo_sid, solo), (room.session_id, sockets))
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=60))
        await fake.fast(http, tokens)

        async def relay(name: str, many: bool) -> float:
            (solo_sid, solo), (sid, sockets) = nodes[name]
            if many:
                _, results = await ws_round(sockets[0], sockets[1:], sid)
            else:
                _, results = await ws_round(solo, [], solo_sid)
            assert all(r[2] == tokens * 4 for r in results), "a member missed text"
            return tokens / (max(r[1] for r in results) - min(r[0] for r in results))

        shares: dict[str, list[float]] = {}
        for index in range(WARM_ROUNDS + rounds):
            if index == WARM_ROUNDS:
                shares = {}
                gc.collect()
                gc.freeze()
            _, first, end, chars = await direct_round(http, fake.base_url)
            direct = chars / 4 / (end - first)
            for many in (False, True):
                for name in ("A", "B") if index % 2 == 0 else ("B", "A"):
                    key = f"{name}-{members if many else 1}"
                    shares.setdefault(key, []).append(await relay(name, many) / direct)
    for key, values in sorted(shares.items()):
        print(
            f"{key:5} share of direct: median {statistics.median(values):.2f}"
            f"  range {min(values):.2f}-{max(values):.2f}"
        )
    for receivers in (1, members):
        paired = [
            b - a for a, b in zip(shares[f"A-{receivers}"], shares[f"B-{receivers}"], strict=True)
        ]
        print(f"B - A, {receivers} member(s): {statistics.median(paired):+.3f} of direct (median)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="HEAD", help="the git revision to compare with")
    parser.add_argument("--database", default="sqlite", choices=("sqlite", "postgresql"))
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--relay", action="store_true", help="the relay rate, not the TTFT")
    parser.add_argument("--tokens", type=int, default=20_000)
    parser.add_argument("--members", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="parley-ab-") as tmp:
        tree = Path(tmp) / "baseline"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(tree), args.baseline],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        try:
            work = Path(tmp) / "run"
            work.mkdir()
            if args.relay:
                asyncio.run(
                    compare_relay(tree, args.database, args.rounds, args.tokens, args.members, work)
                )
            else:
                asyncio.run(compare(tree, args.database, args.rounds, work))
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False
            )


if __name__ == "__main__":
    main()
