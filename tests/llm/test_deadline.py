"""``MovingDeadline``: one timer for a deadline that moves with every token."""

from __future__ import annotations

import asyncio

import pytest

from llm.deadline import MovingDeadline


async def timed_read(deadline: MovingDeadline, seconds: float) -> str:
    deadline.read_started()
    try:
        await asyncio.sleep(seconds)
    except BaseException as exc:
        deadline.read_finished(exc)
        raise
    deadline.read_finished()
    return "read"


async def test_a_read_that_outlasts_the_deadline_times_out() -> None:
    loop = asyncio.get_running_loop()
    deadline = MovingDeadline(loop.time() + 0.05)
    with pytest.raises(TimeoutError):
        await timed_read(deadline, 1.0)
    deadline.close()


async def test_extending_the_deadline_keeps_a_read_alive() -> None:
    loop = asyncio.get_running_loop()
    deadline = MovingDeadline(loop.time() + 0.05)
    reading = asyncio.create_task(timed_read(deadline, 0.15))
    for _ in range(6):
        await asyncio.sleep(0.03)
        deadline.extend(loop.time() + 0.05)
    assert await reading == "read"
    deadline.close()


async def test_a_deadline_passed_between_reads_fails_the_next_read_at_once() -> None:
    loop = asyncio.get_running_loop()
    deadline = MovingDeadline(loop.time() + 0.02)
    assert await timed_read(deadline, 0) == "read"
    await asyncio.sleep(0.05)  # the consumer is busy elsewhere: nothing is cancelled
    with pytest.raises(TimeoutError):
        await timed_read(deadline, 1.0)
    deadline.close()


async def test_a_cancel_from_outside_stays_a_cancel() -> None:
    loop = asyncio.get_running_loop()
    deadline = MovingDeadline(loop.time() + 10)
    reading = asyncio.create_task(timed_read(deadline, 1.0))
    await asyncio.sleep(0.01)
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    deadline.close()


async def test_a_deadline_moved_earlier_fires_at_the_earlier_time() -> None:
    # The first-token deadline (60 s by default) is armed first; after the first token
    # the idle deadline (30 s) is earlier, and a stall must end at that one.
    loop = asyncio.get_running_loop()
    deadline = MovingDeadline(loop.time() + 60)
    assert await timed_read(deadline, 0) == "read"
    deadline.extend(loop.time() + 0.05)
    async with asyncio.timeout(10):  # far later than the moved deadline
        with pytest.raises(TimeoutError):
            await timed_read(deadline, 30)
    deadline.close()
