"""The OpenAI-compatible front door's time to first token (issue 18).

    .venv/bin/python -m bench.frontdoor [--rounds 40] [--databases sqlite]

The set-up of ``bench.streaming``: a loopback fake OpenRouter (``Fast(20)``) in a
process of its own and one ``parley serve`` (memory bus) against it. In the same run,
round by round, the paths in a shuffled order:

* direct: a client POSTs ``/chat/completions`` to the fake and reads the stream;
* WebSocket: a member sends a ``message`` frame and reads the first ``stream.delta``;
* SSE: ``POST /v1/sessions/{id}/messages`` with ``Accept: text/event-stream`` (the
  room turn the front door shares);
* front door: ``POST /v1/chat/completions`` (``stream: true``, the room named by
  ``X-Parley-Session``) and the first chunk with ``content``.

SSE and the front door are each read twice: with httpx (what most Python callers
use) and with a bare HTTP/1.1 client (``bench._rawhttp``) that costs the benchmark's
process about what the WebSocket client does, so that the difference to the WebSocket
path is the server's. The WebSocket member is in one room and the HTTP callers in
another: each answer is delivered to one receiver, and the benchmark's process reads
one stream at a time.

Time to first token is from the request leaving the client to the first token
arriving; "added" is each path's percentile minus the direct one, and the front door
against the WebSocket path is also the median of the per-round differences. Writes
the ``## OpenAI-compatible front door (issue 18)`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from bench._common import ROOT, ServerNode, bench_main, fresh_database, seed_room
from bench._rawhttp import RawHTTP
from bench.streaming import (
    TTFT_TOKENS,
    answering_env,
    direct_round,
    fake_upstream,
    pct,
    read_stream,
    ws_member,
)

TITLE = "## OpenAI-compatible front door (issue 18)"
RESULTS = ROOT / "bench" / "results" / "frontdoor.json"


async def ws_turn(asker: Any, sid: str, turn: int) -> float:
    reading = asyncio.create_task(read_stream(asker))
    frame = {"type": "message", "session_id": sid, "content": f"go {turn}"}
    sent = time.perf_counter()
    await asker.send(orjson.dumps(frame).decode())
    first, _, _ = await reading
    return first - sent


async def sse_turn(http: httpx.AsyncClient, token: str, sid: str, turn: int) -> float:
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    first = end = 0.0
    event = ""
    sent = time.perf_counter()
    async with http.stream(
        "POST", f"/v1/sessions/{sid}/messages", json={"content": f"go {turn}"}, headers=headers
    ) as response:
        assert response.status_code == 201, await response.aread()
        async for line in response.aiter_lines():  # to the body's end, as a client does
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "stream.delta" and not first:
                first = time.perf_counter()
            elif line.startswith("data: ") and event == "stream.end":
                end = time.perf_counter()
    assert first and end, "the SSE response ended without stream.end"
    return first - sent


def completion_body(turn: int) -> dict[str, Any]:
    return {
        "model": "parley",
        "stream": True,
        # A new question each round: the same messages would be a retry of the last.
        "messages": [{"role": "user", "content": f"go {turn}"}],
    }


def has_content(data: bytes | str) -> bool:
    choices = orjson.loads(data).get("choices") or []
    return bool(choices and choices[0]["delta"].get("content"))


async def frontdoor_round(http: httpx.AsyncClient, token: str, sid: str, turn: int) -> float:
    """Time to the first chunk with content, the stream read to ``[DONE]``."""
    headers = {"Authorization": f"Bearer {token}", "X-Parley-Session": sid}
    first = 0.0
    done = False
    sent = time.perf_counter()
    async with http.stream(
        "POST", "/v1/chat/completions", json=completion_body(turn), headers=headers
    ) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():  # to the body's end, as an SDK does
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: ") and not first and has_content(line[6:]):
                first = time.perf_counter()
    assert first and done, "the front door's stream ended early"
    return first - sent


async def frontdoor_raw_round(raw: RawHTTP, token: str, sid: str, turn: int) -> float:
    headers = {"Authorization": f"Bearer {token}", "X-Parley-Session": sid}
    first = 0.0
    done = False
    sent = time.perf_counter()
    async with raw.post("/v1/chat/completions", completion_body(turn), headers) as response:
        assert response.status == 200
        async for line in response.lines():
            if line == b"data: [DONE]":
                done = True
            elif line.startswith(b"data: ") and not first and has_content(line[6:]):
                first = time.perf_counter()
    assert first and done, "the front door's stream ended early"
    return first - sent


async def sse_raw_round(raw: RawHTTP, token: str, sid: str, turn: int) -> float:
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    first = end = 0.0
    event = b""
    sent = time.perf_counter()
    body = {"content": f"go {turn}"}
    async with raw.post(f"/v1/sessions/{sid}/messages", body, headers) as response:
        assert response.status == 201
        async for line in response.lines():
            if line.startswith(b"event: "):
                event = line[7:]
            elif line.startswith(b"data: ") and event == b"stream.delta" and not first:
                first = time.perf_counter()
            elif line.startswith(b"data: ") and event == b"stream.end":
                end = time.perf_counter()
    assert first and end, "the SSE response ended without stream.end"
    return first - sent


PATHS = ("direct", "ws", "sse", "frontdoor", "sse_raw", "frontdoor_raw")


async def run(
    rounds: int, workdir: Path, database: str, server_code: Path | None = None
) -> dict[str, Any]:
    async with fake_upstream() as fake, fresh_database(database, workdir) as url:
        # A room per path, each asked the same questions: every path's history grows
        # alike (the context is built from it), and each answer has one receiver.
        rooms = {name: await seed_room(url, 1, prefix=f"{name}-") for name in PATHS[1:]}
        env = answering_env(url, fake)
        if server_code is not None:  # another revision's server, for a before and after
            env["PYTHONPATH"] = str(server_code)
        server = ServerNode("frontdoor", env, workdir)
        await server.start()
        address = urlsplit(server.http_url)
        raw = RawHTTP(address.hostname or "127.0.0.1", address.port or 80)
        try:
            async with httpx.AsyncClient(base_url=server.http_url, timeout=60) as http:
                await fake.fast(http, TTFT_TOKENS)
                sid = {name: room.session_id for name, room in rooms.items()}
                token = {name: room.tokens[0] for name, room in rooms.items()}
                asker = await ws_member(server.ws_url, token["ws"], sid["ws"])
                turn = 0

                async def direct() -> float:
                    sent, first, _, _ = await direct_round(http, fake.base_url)
                    return float(first - sent)

                paths: dict[str, Callable[[], Awaitable[float]]] = {
                    "direct": direct,
                    "ws": lambda: ws_turn(asker, sid["ws"], turn),
                    "sse": lambda: sse_turn(http, token["sse"], sid["sse"], turn),
                    "frontdoor": lambda: frontdoor_round(
                        http, token["frontdoor"], sid["frontdoor"], turn
                    ),
                    "sse_raw": lambda: sse_raw_round(raw, token["sse_raw"], sid["sse_raw"], turn),
                    "frontdoor_raw": lambda: frontdoor_raw_round(
                        raw, token["frontdoor_raw"], sid["frontdoor_raw"], turn
                    ),
                }
                for _ in range(3):  # warm: connections, caches, the model catalogue
                    turn += 1
                    for path in paths.values():
                        await path()
                gc.collect()
                gc.freeze()
                ttft: dict[str, list[float]] = {name: [] for name in PATHS}
                # A fresh order each round: what one path leaves running (the last
                # answer's store, its spend) falls on each of the others alike.
                order = random.Random(18)
                for _ in range(rounds):
                    turn += 1  # the same new question on every path
                    for name in order.sample(PATHS, len(PATHS)):
                        ttft[name].append(await paths[name]())
                await asker.close()
        finally:
            await raw.aclose()
            server.stop()
    return {"database": database, "rounds": rounds, "ttft": ttft}


NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
ROWS = (
    ("ws", "WebSocket `message` → first `stream.delta`"),
    ("sse_raw", "SSE `POST /v1/sessions/{id}/messages` → first `stream.delta` (bare client)"),
    ("frontdoor_raw", "front door `POST /v1/chat/completions` → first content (bare client)"),
    ("sse", "SSE, read with httpx"),
    ("frontdoor", "front door, read with httpx"),
)


DIFFERENCES = {
    "front door over WebSocket (target: at most +1)": ("frontdoor", "ws"),
    "SSE over WebSocket": ("sse", "ws"),
    "front door over SSE": ("frontdoor", "sse"),
}


def paired(ttft: dict[str, list[float]], path: str, against: str) -> float:
    """The median of the per-round differences, in ms."""
    return statistics.median(a - b for a, b in zip(ttft[path], ttft[against], strict=True)) * 1e3


def render(report: dict[str, Any]) -> str:
    lines = [
        f"Machine: {report['machine']}. Run {report['date']} with"
        f" `python -m bench.frontdoor --rounds {report['runs'][0]['rounds']}`: one"
        " `parley serve` (memory bus), the fake OpenRouter (`bench.fake_upstream`,"
        f" `Fast({TTFT_TOKENS})`) in a process of its own, the clients in the"
        " benchmark's process (websockets; httpx and a bare HTTP/1.1 client for the HTTP"
        " paths, `bench/_rawhttp.py`). Load average at the end:"
        f" {report.get('load', 'not recorded')} (2 cores shared by everything): read the"
        " differences between paths of the same run, not the absolute numbers.",
    ]
    for result in report["runs"]:
        ttft = result["ttft"]
        direct50, direct99 = pct(ttft["direct"], 50), pct(ttft["direct"], 99)
        lines += [
            "",
            f"### {NAMES.get(result['database'], result['database'])}: time to first token"
            f" ({result['rounds']} rounds per path, in a shuffled order each round)",
            "",
            "| path | p50 ms | p99 ms | added p50 ms | added p99 ms |",
            "| --- | ---: | ---: | ---: | ---: |",
            f"| upstream read directly (httpx) | {direct50:.2f} | {direct99:.2f} | | |",
        ]
        for key, name in ROWS:
            p50, p99 = pct(ttft[key], 50), pct(ttft[key], 99)
            lines.append(
                f"| {name} | {p50:.2f} | {p99:.2f} | {p50 - direct50:.2f} | {p99 - direct99:.2f} |"
            )
        lines += [
            "",
            "Median of the per-round differences, ms (each round ran every path once):",
            "",
            "| | bare client | httpx |",
            "| --- | ---: | ---: |",
        ]
        for name, (path, against) in DIFFERENCES.items():
            bare = paired(ttft, path + "_raw", against + "_raw" if against != "ws" else "ws")
            lines.append(f"| {name} | {bare:+.2f} | {paired(ttft, path, against):+.2f} |")
        lines.append(
            "| httpx over the bare client, front door |"
            f" {paired(ttft, 'frontdoor', 'frontdoor_raw'):+.2f} | |"
        )
    return "\n".join(lines)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument(
        "--server-code",
        type=Path,
        help="run the server from this checkout (e.g. a worktree of main), not this one",
    )


async def _run(args: argparse.Namespace, database: str, workdir: Path) -> dict[str, Any]:
    return await run(args.rounds, workdir, database, args.server_code)


def main() -> None:
    bench_main(
        __doc__ or "",
        title=TITLE,
        results=RESULTS,
        notes=Path(__file__).with_name("_frontdoor_notes.md"),
        render=render,
        run=_run,
        arguments=_arguments,
    )


if __name__ == "__main__":
    main()
