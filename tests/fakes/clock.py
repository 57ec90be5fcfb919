"""A clock tests move by hand, for code that takes ``clock: Callable[[], float]``
(monotonic seconds): the breaker's reset timeout, the caller cache's TTL. Tests step
past a timeout instead of sleeping through it."""

from __future__ import annotations


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
