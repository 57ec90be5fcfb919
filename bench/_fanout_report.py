"""The ``## Realtime fan-out (issue 3)`` section, from the last results of
``bench.fanout`` and ``bench.idle_connections`` (kept in bench/results/, ignored by
git), so that either benchmark can be re-run alone and the section stays whole."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench._common import REPORT, ROOT, machine, write_section

TITLE = "## Realtime fan-out (issue 3)"
RESULTS = ROOT / "bench" / "results" / "fanout.json"
IDLE_RESULTS = ROOT / "bench" / "results" / "idle_connections.json"
NOTES = Path(__file__).with_name("_fanout_notes.md")


def render_and_write(
    *,
    fanout: dict[str, Any] | None = None,
    idle: dict[str, Any] | None = None,
    report: Path = REPORT,
) -> str:
    if fanout is not None:
        fanout["date"] = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
        RESULTS.write_text(json.dumps(fanout, indent=1))
    if idle is not None:
        idle["date"] = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
        IDLE_RESULTS.write_text(json.dumps(idle, indent=1))
    fanout = fanout or _load(RESULTS)
    idle = idle or _load(IDLE_RESULTS)
    parts = [f"Machine: {machine()}."]
    if fanout:
        parts.append(_fanout(fanout))
    if idle:
        parts.append(_idle(idle))
    if NOTES.exists():
        parts.append(NOTES.read_text().strip())
    body = "\n\n".join(parts)
    write_section(TITLE, body, report)
    print(body)
    return body


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def _fanout(results: dict[str, Any]) -> str:
    lines = [
        f"### Fan-out to a room of {results['members']} (`.venv/bin/python -m bench.fanout`,"
        f" run {results['date']}; `scripts/bench` runs every benchmark)",
        "",
        f"Each step sends for {results['seconds']:g} s from 20 of the members' sockets at a"
        " fixed rate; every socket (a Node.js `ws` client, `bench/node/client.js`) records"
        " the latency from send to receipt on one monotonic clock. `typing` is not echoed"
        " to its sender (199 deliveries per event); a stored `message` goes to all 200."
        " Rate limits raised for the run: `MESSAGES_PER_WINDOW=1000000`,"
        " `TYPING_PER_WINDOW=1000000`, `FRAMES_PER_WINDOW=1000000`; `SEND_QUEUE_FRAMES=8192`,"
        " `SEND_QUEUE_BYTES=16777216`. CPU is % of one core over"
        " the step (server process(es), and the load client).",
    ]
    for key in ("one", "two"):
        setup = results.get(key)
        if not setup:
            continue
        lines += ["", f"**{setup['setup']}**", ""]
        lines += [
            "| frame | target deliveries/s | events/s sent | delivered/s | delivered/expected"
            " | p50 ms | p99 ms | max ms | server CPU % | client CPU % | held |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
        ]
        for kind in ("typing", "message"):
            for step in setup[kind]:
                cpu = step["cpu"]
                server_cpu = " + ".join(f"{v:.0f}" for k, v in cpu.items() if k != "client")
                lines.append(
                    f"| {kind} | {step['target_deliveries']:,} | {step['send_rate']:.0f} |"
                    f" {step['delivery_rate']:,.0f} | {step['delivered']:,}/{step['expected']:,}"
                    f" | {step['p50_ms']:.1f} | {step['p99_ms']:.1f} | {step['max_ms']:.0f} |"
                    f" {server_cpu} | {cpu['client']:.0f} | {'yes' if step['held'] else 'no'} |"
                )
        if key == "one":
            lines += ["", _verdict(setup["typing"])]
        for kind in ("typing", "message"):
            best = [s for s in setup[kind] if s["held"]]
            top = max((s["delivery_rate"] for s in best), default=0.0)
            lines.append("")
            lines.append(
                f"Highest {kind} rate held (all delivered, p99 < 100 ms): {top:,.0f} deliveries/s."
            )
    return "\n".join(lines)


def _verdict(steps: list[dict[str, Any]]) -> str:
    """The issue's targets for ephemeral events on one node."""
    top = max((s["delivery_rate"] for s in steps if s["held"]), default=0.0)
    half = [s for s in steps if s["target_deliveries"] == 25_000]
    p99 = half[0]["p99_ms"] if half else float("nan")
    rate_ok = "met" if top >= 0.95 * 50_000 else "NOT met"
    p99_ok = "met" if p99 < 20 else "NOT met"
    return (
        f"Targets, one node, typing: at least 50,000 deliveries/s held: {rate_ok}"
        f" ({top:,.0f}/s); p99 under 20 ms at 25,000/s: {p99_ok} ({p99:.1f} ms)."
    )


def _idle(results: dict[str, Any]) -> str:
    per = results["per_connection_kib"]
    verdict = "met" if per < 30 else "NOT met"
    rooms = results["rooms"]
    joined = f"each joined to one of {rooms} rooms" if rooms else "no room joined"
    return "\n".join(
        [
            f"### Idle connections (`.venv/bin/python -m bench.idle_connections`,"
            f" run {results['date']})",
            "",
            f"{results['connections']:,} authenticated WebSocket connections (Bearer header,"
            f" welcome received, {joined})"
            f" held open on one node ({results['setup']}); `ulimit -n` raised to"
            f" {results['fd_limit']} for both processes.",
            "",
            "| | value |",
            "| --- | ---: |",
            f"| server RSS before (after warm-up) | {results['rss_before_mib']:.1f} MiB |",
            f"| server RSS with all connections open | {results['rss_after_mib']:.1f} MiB |",
            f"| per connection (RSS delta / N) | {per:.1f} KiB |",
            f"| connect time for all | {results['connect_s']:.1f} s |",
            f"| server CPU while idle for {results['idle_s']:g} s | {results['idle_cpu']:.1f} % |",
            "",
            f"Target < 30 KiB per connection: {verdict}.",
        ]
    )
