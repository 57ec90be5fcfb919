"""The issue-19 section of docs/benchmarks.md, rendered from a run's results: the bars
are computed at the right steps, and every other section of the file stays as it was.
No processes: the results are written here as a run would leave them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from bench._fanout_report import SCALING_TITLE, render_scaling_and_write
from bench.fanout_scaling import summarize

pytestmark = pytest.mark.storage_free


def step(target: int, efficiency: float, *, held: bool = True, servers: int = 1) -> dict[str, Any]:
    cores = {f"server{i + 1}": 0.5 / servers for i in range(servers)}
    return {
        "target_deliveries": target,
        "delivery_rate": target * 0.99,
        "delivered": 100,
        "expected": 100,
        "p50_ms": 2.0,
        "p99_ms": 20.0 if held else 300.0,
        "cores": cores | {"client": 0.3, "redis": 0.01},
        "efficiency": efficiency,
        "held": held,
    }


def results() -> dict[str, Any]:
    run: dict[str, Any] = {
        "members": 200,
        "seconds": 4.0,
        "kinds": ["typing"],
        "held_p99_ms": 100.0,
        "top_step": {"typing": 300_000},
        "date": "2026-12-03 10:00 UTC",
        "load": [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
        "skipped": [],
        "parley": {
            # One node holds more than two, but the ratio is taken at 50,000/s, the
            # highest step both held: efficiency rises with the rate.
            "1": {"typing": [step(50_000, 100_000), step(100_000, 150_000)]},
            "2": {
                "typing": [
                    step(50_000, 90_000, servers=2),
                    step(100_000, 140_000, held=False, servers=2),
                ]
            },
        },
        "socketio": {
            "1": {"typing": [step(50_000, 120_000), step(100_000, 160_000, held=False)]},
            "2": {"typing": [step(50_000, 110_000, servers=2)]},
        },
    }
    run["summary"] = summarize(run)
    return run


def test_bars_compare_efficiency_at_one_step_and_maxima_as_steps() -> None:
    summary = summarize(results())["typing"]
    assert summary["same_step"] == 50_000
    assert summary["two_over_one_efficiency"] == pytest.approx(0.9)
    assert (summary["parley_two_step"], summary["socketio_step"]) == (50_000, 50_000)
    assert summary["two_over_peer_two_efficiency"] == pytest.approx(90 / 110)


@pytest.mark.skipif(shutil.which("node") is None, reason="the section names Node's version")
def test_the_section_is_added_and_the_others_stay(tmp_path: Path) -> None:
    report = tmp_path / "benchmarks.md"
    before = "# Benchmarks\n\n## Realtime fan-out (issue 3)\n\nkept\n\n## Other\n\nalso kept\n"
    report.write_text(before)
    render_scaling_and_write(results(), report=report)
    render_scaling_and_write(results(), report=report)  # a re-run replaces, not appends
    text = report.read_text()
    assert text.startswith(before.rstrip("\n"))
    assert text.count(SCALING_TITLE) == 1
    assert "0.90 (bar 0.8: met in this run)" in text
    assert "two Parley nodes 50,000/s, the Socket.IO peer 50,000/s" in text
    assert "| Parley, 2 nodes | 50,000/s |" in text
    assert "0.25 + 0.25" in text  # each server's cores
    assert "a loaded machine" not in text  # load average 0


@pytest.mark.skipif(shutil.which("node") is None, reason="the section names Node's version")
def test_only_the_load_before_the_run_marks_a_loaded_machine(tmp_path: Path) -> None:
    report = tmp_path / "benchmarks.md"
    report.write_text("# Benchmarks\n")
    cores = float(os.cpu_count() or 1)
    busy_after = results() | {"load": [[0.3, 0.9, 1.3], [cores, cores, 1.0]]}
    render_scaling_and_write(busy_after, report=report)
    assert "a loaded machine" not in report.read_text()  # its own servers and client

    busy_before = results() | {"load": [[cores, cores, 1.0], [cores, cores, 1.0]]}
    render_scaling_and_write(busy_before, report=report)
    assert "a loaded machine" in report.read_text()
