"""The OpenAI-compatible front door's time to first token (issue 18).

    .venv/bin/python -m bench.frontdoor [--rounds 40] [--databases sqlite]

The set-up of ``bench.streaming``: a loopback fake OpenRouter (``Fast(20)``) in a
process of its own and one ``parley serve`` (memory bus) against it. In the same run,
interleaved round by round:

* direct: a client POSTs ``/chat/completions`` to the fake and reads the stream;
* WebSocket: a member sends a ``message`` frame and reads the first ``stream.delta``;
* SSE: ``POST /v1/sessions/{id}/messages`` with ``Accept: text/event-stream`` (the
  room turn the front door shares);
* front door: ``POST /v1/chat/completions`` (``stream: true``, the room named by
  ``X-Parley-Session``) and the first chunk with ``content``.

Time to first token is from the request leaving the client to the first token
arriving; "added" is each path's percentile minus the direct one. Writes the
``## OpenAI-compatible front door (issue 18)`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench._common import (
    REPORT,
    ROOT,
    ServerNode,
    fresh_database,
    machine,
    seed_room,
    write_section,
)
from bench.streaming import (
    TTFT_TOKENS,
    answering_env,
    direct_round,
    fake_upstream,
    pct,
    read_stream,
    sse_round,
    ws_member,
    ws_round,
)

TITLE = "## OpenAI-compatible front door (issue 18)"
RESULTS = ROOT / "bench" / "results" / "frontdoor.json"


async def frontdoor_round(
    http: httpx.AsyncClient, token: str, sid: str, turn: int
) -> tuple[float, float]:
    """(sent, first token) of one streamed completion, read to ``[DONE]``."""
    body = {
        "model": "parley",
        "stream": True,
        # A new question each round: the same messages would be a retry of the last.
        "messages": [{"role": "user", "content": f"go {turn}"}],
    }
    headers = {"Authorization": f"Bearer {token}", "X-Parley-Session": sid}
    first = 0.0
    done = False
    sent = time.perf_counter()
    async with http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():  # to the body's end, as an SDK does
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: ") and not first:
                choices = orjson.loads(line[6:]).get("choices") or []
                if choices and choices[0]["delta"].get("content"):
                    first = time.perf_counter()
    assert first and done, "the front door's stream ended early"
    return sent, first


async def run(rounds: int, workdir: Path, database: str) -> dict[str, Any]:
    async with fake_upstream() as fake, fresh_database(database, workdir) as url:
        room = await seed_room(url, 1)
        server = ServerNode("frontdoor", answering_env(url, fake), workdir)
        await server.start()
        try:
            async with httpx.AsyncClient(base_url=server.http_url, timeout=60) as http:
                await fake.fast(http, TTFT_TOKENS)
                sid, token = room.session_id, room.tokens[0]
                asker = await ws_member(server.ws_url, token, sid)
                ttft: dict[str, list[float]] = {"direct": [], "ws": [], "sse": [], "frontdoor": []}
                turn = 0
                for _ in range(3):  # warm: connections, caches, the model catalogue
                    await direct_round(http, fake.base_url)
                    await ws_round(asker, [], sid)
                    turn += 1
                    await frontdoor_round(http, token, sid, turn)
                    await read_stream(asker)
                    await sse_round(http, token, sid)
                    await read_stream(asker)
                gc.collect()
                gc.freeze()
                for _ in range(rounds):
                    sent, first, _, _ = await direct_round(http, fake.base_url)
                    ttft["direct"].append(first - sent)
                    sent, ((first, _, _),) = await ws_round(asker, [], sid)
                    ttft["ws"].append(first - sent)
                    turn += 1
                    sent, first = await frontdoor_round(http, token, sid, turn)
                    ttft["frontdoor"].append(first - sent)
                    await read_stream(asker)  # a member: it saw the front door's turn too
                    sent, first, _, _ = await sse_round(http, token, sid)
                    ttft["sse"].append(first - sent)
                    await read_stream(asker)
                await asker.close()
        finally:
            server.stop()
    return {"database": database, "rounds": rounds, "ttft": ttft}


NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
PATHS = (
    ("ws", "WebSocket `message` → first `stream.delta`"),
    ("sse", "SSE `POST /v1/sessions/{id}/messages` → first `stream.delta`"),
    ("frontdoor", "front door `POST /v1/chat/completions` → first content chunk"),
)


def render(report: dict[str, Any]) -> str:
    lines = [
        f"Machine: {report['machine']}. Run {report['date']} with"
        f" `python -m bench.frontdoor --rounds {report['runs'][0]['rounds']}`: one"
        " `parley serve` (memory bus), the fake OpenRouter (`bench.fake_upstream`,"
        f" `Fast({TTFT_TOKENS})`) in a process of its own, httpx and websockets clients in"
        f" the benchmark's process. Load average at the end: {report.get('load', 'not recorded')}"
        " (2 cores shared by everything): read the differences between paths of the same"
        " run, not the absolute numbers.",
    ]
    for result in report["runs"]:
        ttft = result["ttft"]
        direct50, direct99 = pct(ttft["direct"], 50), pct(ttft["direct"], 99)
        ws50 = pct(ttft["ws"], 50)
        lines += [
            "",
            f"### {NAMES.get(result['database'], result['database'])}: time to first token"
            f" ({result['rounds']} rounds per path, interleaved)",
            "",
            "| path | p50 ms | p99 ms | added p50 ms | added p99 ms |",
            "| --- | ---: | ---: | ---: | ---: |",
            f"| upstream read directly | {direct50:.2f} | {direct99:.2f} | | |",
        ]
        for key, name in PATHS:
            p50, p99 = pct(ttft[key], 50), pct(ttft[key], 99)
            lines.append(
                f"| {name} | {p50:.2f} | {p99:.2f} | {p50 - direct50:.2f} | {p99 - direct99:.2f} |"
            )
        front50 = pct(ttft["frontdoor"], 50)
        lines += [
            "",
            f"Front door against the WebSocket path, p50: {front50 - ws50:+.2f} ms"
            " (target: within 1 ms).",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument(
        "--databases", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql"
    )
    parser.add_argument("--report", type=Path, default=REPORT, help="the file to update")
    parser.add_argument(
        "--render-only", action="store_true", help="rewrite the section from the last results"
    )
    args = parser.parse_args()
    result: dict[str, Any]
    if args.render_only:
        result = json.loads(RESULTS.read_text())
    else:
        runs = []
        for database in args.databases.split(","):
            with tempfile.TemporaryDirectory(prefix="parley-frontdoor-") as tmp:
                runs.append(asyncio.run(run(args.rounds, Path(tmp), database)))
        result = {"runs": runs, "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"}
        result["machine"] = machine()
        result["load"] = " ".join(f"{n:.2f}" for n in os.getloadavg())
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=1))
    body = render(result)
    notes = Path(__file__).with_name("_frontdoor_notes.md")
    if notes.exists():
        body += "\n\n" + notes.read_text().strip()
    write_section(TITLE, body, args.report)
    print(body)


if __name__ == "__main__":
    main()
