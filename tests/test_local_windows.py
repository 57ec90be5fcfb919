"""Per-connection rate-limit windows in this process (server/security/local_windows.py)."""

from __future__ import annotations

import pytest

from errors import RateLimited
from server.security.local_windows import LocalWindows
from server.security.ratelimit import Limit, RateLimiter


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_allows_the_limit_within_a_window_then_refuses_with_a_positive_wait() -> None:
    clock = Clock(1000.0)  # the start of a 10 s window
    windows = LocalWindows(clock)
    assert [windows.hit("frames", 5, 10, "c1") for _ in range(5)] == [None] * 5
    wait = windows.hit("frames", 5, 10, "c1")
    assert wait is not None and 0 < wait <= 20
    assert windows.hit("frames", 5, 10, "c2") is None  # keys are separate


def test_the_previous_window_weighs_on_the_next_as_it_slides_out() -> None:
    clock = Clock(1000.0)
    windows = LocalWindows(clock)
    for _ in range(10):
        assert windows.hit("frames", 10, 10, "c1") is None
    clock.now = 1010.5  # 5 % into the next window: 9.5 of the 10 still count
    assert windows.hit("frames", 10, 10, "c1") == pytest.approx(0.5)
    clock.now = 1015.0  # half of the previous window slid out
    assert [windows.hit("frames", 10, 10, "c1") for _ in range(5)] == [None] * 5
    assert windows.hit("frames", 10, 10, "c1") is not None
    clock.now = 1030.0  # two windows later nothing counts
    assert [windows.hit("frames", 10, 10, "c1") for _ in range(10)] == [None] * 10


def test_the_refusal_says_when_a_unit_frees_up() -> None:
    clock = Clock(1000.0)
    windows = LocalWindows(clock)
    for _ in range(4):
        windows.hit("frames", 4, 10, "c1")
    clock.now = 1003.0
    wait = windows.hit("frames", 4, 10, "c1")
    assert wait is not None
    clock.now += wait
    assert windows.hit("frames", 4, 10, "c1") is None


def test_keys_idle_for_two_windows_are_swept() -> None:
    clock = Clock(1000.0)
    windows = LocalWindows(clock)
    for n in range(1000):
        windows.hit("frames", 5, 10, f"c{n}")
    assert len(windows) == 1000
    clock.now = 1030.0
    windows.hit("frames", 5, 10, "fresh")
    assert len(windows) == 1
    windows.clear("frames", "fresh")
    assert len(windows) == 0


async def test_the_rate_limiter_uses_them_for_local_limits() -> None:
    limiter = RateLimiter(None)
    limit = Limit("frames", 3, 60)
    for _ in range(3):
        await limiter.hit(limit, "conn-1", local=True)
    with pytest.raises(RateLimited) as refused:
        await limiter.hit(limit, "conn-1", "too many frames", local=True)
    assert refused.value.retry_after is not None and refused.value.retry_after > 0
    await limiter.hit(limit, "conn-2", local=True)  # another connection's own window
