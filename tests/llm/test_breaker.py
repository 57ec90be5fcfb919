"""``UpstreamBreaker`` on its own: outcomes fed by hand, time from a ``FakeClock``.

No upstream, no sockets and no sleeping: each step is an outcome or a move of the
clock, and the table says what state and answer follow.
"""

from __future__ import annotations

import asyncio

import pytest

from errors import Unavailable
from llm.breaker import UpstreamBreaker
from tests.fakes.clock import FakeClock

FAIL_MAX = 3
RESET_S = 30.0


def breaker(clock: FakeClock, changes: list[str] | None = None) -> UpstreamBreaker:
    on_change = (lambda _name, state: changes.append(state)) if changes is not None else None
    return UpstreamBreaker("upstream", FAIL_MAX, RESET_S, on_change, clock=clock)


async def run(cb: UpstreamBreaker, clock: FakeClock, steps: list[str]) -> list[str]:
    """Play ``steps`` (``ok``, ``fail``, ``wait:S``, ``admit``) and say what each
    ``admit`` answered: ``through``, ``probe`` or the refusal's first words."""
    answers: list[str] = []
    for step in steps:
        if step == "ok":
            cb.record_success()
        elif step == "fail":
            cb.record_failure(RuntimeError("upstream failed"))
        elif step.startswith("wait:"):
            clock.advance(float(step.removeprefix("wait:")))
        elif step == "admit":
            try:
                trial = await cb.admit()
            except Unavailable as exc:
                answers.append(exc.message.split(":")[0])
            else:
                answers.append("through" if trial is None else "probe")
        else:
            raise ValueError(step)
    return answers


@pytest.mark.parametrize(
    ("steps", "answers", "state"),
    [
        pytest.param([], [], "closed", id="starts closed"),
        pytest.param(["fail", "fail", "admit"], ["through"], "closed", id="under fail_max"),
        pytest.param(
            ["fail", "fail", "ok", "fail", "fail", "admit"],
            ["through"],
            "closed",
            id="a success resets the count",
        ),
        pytest.param(
            ["fail", "fail", "fail", "admit"], ["circuit open"], "open", id="fail_max opens"
        ),
        pytest.param(
            ["fail"] * 3 + ["wait:29.9", "admit"],
            ["circuit open"],
            "open",
            id="open until the reset time",
        ),
        pytest.param(
            ["fail"] * 3 + ["wait:30", "admit"], ["probe"], "half-open", id="then one probe"
        ),
        pytest.param(
            ["fail"] * 3 + ["wait:30", "admit", "ok", "admit"],
            ["probe", "through"],
            "closed",
            id="a good probe closes",
        ),
        pytest.param(
            ["fail"] * 3 + ["wait:30", "admit", "fail", "admit"],
            ["probe", "circuit open"],
            "open",
            id="a failed probe re-opens",
        ),
        pytest.param(
            ["fail"] * 3 + ["wait:30", "admit", "admit"],
            ["probe", "circuit half-open"],
            "half-open",
            id="a second caller is not a second probe",
        ),
        pytest.param(
            ["fail"] * 3 + ["wait:30", "admit", "fail", "wait:30", "admit"],
            ["probe", "probe"],
            "half-open",
            id="the reset time counts again from the re-opening",
        ),
    ],
)
async def test_the_breaker_follows_its_outcomes_and_the_clock(
    steps: list[str], answers: list[str], state: str
) -> None:
    clock = FakeClock()
    cb = breaker(clock)

    assert await run(cb, clock, steps) == answers
    assert cb.state == state


async def test_an_open_circuit_says_how_long_is_left() -> None:
    clock = FakeClock()
    cb = breaker(clock)
    await run(cb, clock, ["fail"] * FAIL_MAX + ["wait:10"])

    with pytest.raises(Unavailable) as refused:
        await cb.admit()

    assert cb.remaining_s() == pytest.approx(20.0)
    assert refused.value.retry_after == pytest.approx(20.0)


async def test_every_transition_is_reported() -> None:
    clock = FakeClock()
    changes: list[str] = []
    cb = breaker(clock, changes)

    await run(cb, clock, ["fail"] * FAIL_MAX + ["wait:30", "admit", "fail", "wait:30", "admit"])
    await run(cb, clock, ["ok"])

    assert changes == ["open", "half-open", "open", "half-open", "closed"]


async def test_a_released_probe_hands_over_to_the_caller_waiting_for_it() -> None:
    clock = FakeClock()
    cb = breaker(clock)
    await run(cb, clock, ["fail"] * FAIL_MAX + ["wait:30"])
    probe = await cb.admit()
    waiting = asyncio.create_task(cb.admit(wait_s=5.0))
    await asyncio.sleep(0)  # the waiter runs up to its wait for the probe's verdict

    cb.release(probe)

    assert await waiting is not None  # the new probe
    assert cb.state == "half-open"


async def test_callers_waiting_on_a_good_probe_all_go_through() -> None:
    clock = FakeClock()
    cb = breaker(clock)
    await run(cb, clock, ["fail"] * FAIL_MAX + ["wait:30"])
    await cb.admit()
    waiting = [asyncio.create_task(cb.admit(wait_s=5.0)) for _ in range(3)]
    await asyncio.sleep(0)

    cb.record_success()

    assert await asyncio.gather(*waiting) == [None, None, None]
    assert cb.state == "closed"
