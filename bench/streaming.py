"""Assistant streaming through Parley versus reading the upstream directly (issue 4).

    .venv/bin/python -m bench.streaming [--rounds 60] [--tokens 20000] [--members 50]

A loopback fake OpenRouter (``tests/fakes/openrouter.py``, scenario ``Fast(n)``: every
token as fast as it can write them) and one ``parley serve`` process (memory bus;
SQLite, then PostgreSQL unless ``--databases`` says otherwise) configured against it.
In the same run, interleaved round by round:

* direct: a client POSTs ``/chat/completions`` to the fake and reads the stream;
* WebSocket: a member sends a ``message`` frame and reads the ``stream.delta``s;
* SSE: ``POST /v1/sessions/{id}/messages`` with ``Accept: text/event-stream``.

Time to first token is from the request leaving the client to the first token
(``stream.delta``) arriving; "added" is each path's percentile minus the direct one.
The relay rate is tokens over the time from the first token to the last one (the
``stream.end``) at the slowest receiver, with 1 and with ``--members`` members joined.
Writes the ``## Assistant streaming (issue 4)`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect

from bench._common import (
    ROOT,
    ServerNode,
    bench_main,
    fresh_database,
    seed_room,
    server_env,
)

TITLE = "## Assistant streaming (issue 4)"
RESULTS = ROOT / "bench" / "results" / "streaming.json"
MODEL = "openai/gpt-4o-mini"
TTFT_TOKENS = 20
RELAY_REPEATS = 9


async def ws_member(url: str, token: str, session_id: str) -> ClientConnection:
    ws = await connect(url, additional_headers={"Authorization": f"Bearer {token}"}, max_size=None)
    assert orjson.loads(await ws.recv())["type"] == "welcome"
    await ws.send(orjson.dumps({"type": "join", "session_id": session_id, "id": "j"}).decode())
    while orjson.loads(await ws.recv())["type"] != "joined":
        pass
    return ws


async def read_stream(ws: ClientConnection) -> tuple[float, float, int]:
    """(first delta at, stream.end at, characters) for the next stream on ``ws``."""
    first = 0.0
    chars = 0
    while True:
        frame = orjson.loads(await ws.recv())
        kind = frame["type"]
        if kind == "stream.delta":
            if not first:
                first = time.perf_counter()
            chars += len(frame["text"])
        elif kind == "stream.end":
            return first, time.perf_counter(), chars


async def ws_round(asker: ClientConnection, others: list[ClientConnection], sid: str) -> Any:
    readers = [asyncio.create_task(read_stream(ws)) for ws in [asker, *others]]
    sent = time.perf_counter()
    await asker.send(orjson.dumps({"type": "message", "session_id": sid, "content": "go"}).decode())
    results = await asyncio.gather(*readers)
    return sent, results


async def sse_round(
    http: httpx.AsyncClient, token: str, sid: str
) -> tuple[float, float, float, int]:
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    first = end = 0.0
    chars = 0
    event = ""
    sent = time.perf_counter()
    async with http.stream(
        "POST", f"/v1/sessions/{sid}/messages", json={"content": "go"}, headers=headers
    ) as response:
        assert response.status_code == 201, await response.aread()
        # Read to the body's end, as an SSE client does: leaving earlier would close
        # the connection, and the next round would pay for a new one.
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "stream.delta":
                if not first:
                    first = time.perf_counter()
                chars += len(orjson.loads(line[6:])["text"])
            elif line.startswith("data: ") and event == "stream.end":
                end = time.perf_counter()
    assert end, "the SSE response ended without stream.end"
    return sent, first, end, chars


async def direct_round(http: httpx.AsyncClient, base_url: str) -> tuple[float, float, float, int]:
    body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "go"}]}
    first = end = 0.0
    chars = 0
    sent = time.perf_counter()
    async with http.stream("POST", base_url + "/chat/completions", json=body) as response:
        async for line in response.aiter_lines():  # to the body's end, as sse_round
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                end = time.perf_counter()
                continue
            choices = orjson.loads(line[6:]).get("choices") or []
            text = choices[0]["delta"].get("content") if choices else None
            if text:
                if not first:
                    first = time.perf_counter()
                chars += len(text)
    assert end, "the upstream stream ended without [DONE]"
    return sent, first, end, chars


class Upstream:
    """``bench.fake_upstream``, running."""

    def __init__(self, port: int) -> None:
        self.base_url = f"http://127.0.0.1:{port}/api/v1"
        self._control = f"http://127.0.0.1:{port}/_bench/fast"

    async def fast(self, http: httpx.AsyncClient, tokens: int) -> None:
        (await http.post(self._control, json={"tokens": tokens})).raise_for_status()


@asynccontextmanager
async def fake_upstream() -> AsyncIterator[Upstream]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.fake_upstream", cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        yield Upstream(int(await process.stdout.readline()))
    finally:
        process.terminate()
        await process.wait()


def pct(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1] * 1000


def answering_env(database_url: str, fake: Upstream, **extra: str) -> dict[str, str]:
    """A server on one node that answers through ``fake``, with no rate limit in the way."""
    return server_env(
        database_url,
        None,
        OPENROUTER_API_KEY="bench-key",
        OPENROUTER_BASE_URL=fake.base_url,
        LLM_MODEL=MODEL,
        MESSAGES_PER_WINDOW="1000000",
        FRAMES_PER_WINDOW="1000000",
        JOINS_PER_WINDOW="1000000",
        **extra,
    )


async def run(
    rounds: int, tokens: int, members: int, workdir: Path, database: str
) -> dict[str, Any]:
    async with fake_upstream() as fake, fresh_database(database, workdir) as url:
        room = await seed_room(url, members)
        server = ServerNode("stream", answering_env(url, fake), workdir)
        await server.start()
        sockets: list[ClientConnection] = []
        try:
            async with httpx.AsyncClient(base_url=server.http_url, timeout=60) as http:
                await fake.fast(http, TTFT_TOKENS)
                asker = await ws_member(server.ws_url, room.tokens[0], room.session_id)
                sockets.append(asker)
                sid, token = room.session_id, room.tokens[0]
                ttft: dict[str, list[float]] = {"direct": [], "ws": [], "sse": []}
                for _ in range(3):  # warm: connections, caches, the model catalogue
                    await direct_round(http, fake.base_url)
                    await ws_round(asker, [], sid)
                    await sse_round(http, token, sid)
                    await read_stream(asker)
                # A full collection of this process's heap (up to 100 ms) would be
                # charged to whichever path it hit.
                gc.collect()
                gc.freeze()
                for _ in range(rounds):
                    sent, first, _, _ = await direct_round(http, fake.base_url)
                    ttft["direct"].append(first - sent)
                    sent, ((first, _, _),) = await ws_round(asker, [], sid)
                    ttft["ws"].append(first - sent)
                    sent, first, _, _ = await sse_round(http, token, sid)
                    ttft["sse"].append(first - sent)
                    await read_stream(asker)  # the asker is a member: it saw that one too

                await fake.fast(http, tokens)
                # Several generations per receiver, interleaved with direct reads:
                # one generation is a fraction of a second, so one sample is noise.
                rates: dict[str, dict[str, Any]] = {
                    key: {"samples": []} for key in ("direct", "ws_1", "sse_1")
                }
                for _ in range(RELAY_REPEATS):
                    sent, first, end, chars = await direct_round(http, fake.base_url)
                    rates["direct"]["samples"].append(chars / 4 / (end - first))
                    sent, ((first, end, chars),) = await ws_round(asker, [], sid)
                    rates["ws_1"]["samples"].append(chars / 4 / (end - first))
                    sent, first, end, chars = await sse_round(http, token, sid)
                    rates["sse_1"]["samples"].append(chars / 4 / (end - first))
                    await read_stream(asker)
                for index in range(1, members):
                    sockets.append(
                        await ws_member(server.ws_url, room.tokens[index], room.session_id)
                    )
                many = rates[f"ws_{members}"] = {"samples": []}
                for _ in range(RELAY_REPEATS):
                    sent, first, end, chars = await direct_round(http, fake.base_url)
                    rates["direct"]["samples"].append(chars / 4 / (end - first))
                    sent, results = await ws_round(asker, sockets[1:], sid)
                    start = min(r[0] for r in results)
                    slowest = max(r[1] for r in results)
                    assert all(r[2] == tokens * 4 for r in results), "a member missed text"
                    many["samples"].append(tokens / (slowest - start))
        finally:
            for ws in sockets:
                await ws.close()
            server.stop()
    return {
        "database": database,
        "rounds": rounds,
        "tokens": tokens,
        "members": members,
        "ttft": ttft,
        "rates": rates,
    }


NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


def render(report: dict[str, Any]) -> str:
    first = report["runs"][0]
    lines = [
        f"Machine: {report['machine']}. Run {report['date']} with"
        f" `python -m bench.streaming --rounds {first['rounds']}"
        f" --tokens {first['tokens']} --members {first['members']}`: one `parley serve`"
        " (memory bus) per database, a loopback fake OpenRouter (`Fast(n)`) in a process"
        " of its own (`bench.fake_upstream`), Python clients (httpx, websockets) in the"
        " benchmark's process.",
    ]
    return "\n".join(lines + [render_run(result) for result in report["runs"]])


def render_run(result: dict[str, Any]) -> str:
    ttft = result["ttft"]
    database = NAMES.get(result["database"], result["database"])
    direct50, direct99 = pct(ttft["direct"], 50), pct(ttft["direct"], 99)
    lines = [
        "",
        f"### {database}: time to first token ({result['rounds']} rounds per path,"
        f" interleaved; `Fast({TTFT_TOKENS})`)",
        "",
        "| path | p50 ms | p99 ms | added p50 ms | added p99 ms |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| upstream read directly | {direct50:.2f} | {direct99:.2f} | | |",
    ]
    for key, name in (("ws", "WebSocket `message` → first `stream.delta`"), ("sse", "SSE POST")):
        p50, p99 = pct(ttft[key], 50), pct(ttft[key], 99)
        lines.append(
            f"| {name} | {p50:.2f} | {p99:.2f} | {p50 - direct50:.2f} | {p99 - direct99:.2f} |"
        )
    rates = result["rates"]
    direct_rate = statistics.median(rates["direct"]["samples"])
    lines += [
        "",
        f"### {database}: relay rate (`Fast({result['tokens']})`, median of"
        f" {len(rates['ws_1']['samples'])} generations per row, interleaved with direct reads)",
        "",
        "| receiver | tokens/s | share of direct |",
        "| --- | ---: | ---: |",
        f"| upstream read directly | {direct_rate:,.0f} | 1.00 |",
    ]
    for key, name in (
        ("ws_1", "WebSocket, 1 member"),
        ("sse_1", "SSE, the poster"),
        (f"ws_{result['members']}", f"WebSocket, {result['members']} members (slowest)"),
    ):
        rate = statistics.median(rates[key]["samples"])
        lines.append(f"| {name} | {rate:,.0f} | {rate / direct_rate:.2f} |")
    return "\n".join(lines)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--tokens", type=int, default=20_000)
    parser.add_argument("--members", type=int, default=50)


async def _run(args: argparse.Namespace, database: str, workdir: Path) -> dict[str, Any]:
    return await run(args.rounds, args.tokens, args.members, workdir, database)


def main() -> None:
    bench_main(
        __doc__ or "",
        title=TITLE,
        results=RESULTS,
        notes=Path(__file__).with_name("_streaming_notes.md"),
        render=render,
        run=_run,
        arguments=_arguments,
    )


if __name__ == "__main__":
    main()
