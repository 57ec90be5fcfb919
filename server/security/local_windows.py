"""Rate-limit windows kept in this process, a few dozen bytes per key (issue 19).

For limits on one connection (every frame it sends), checked on every frame and never
shared between nodes. ``limits``' memory storage keeps, per key, an ``asyncio.Lock``
and one entry per unit taken within the window (up to the limit: 120 with the default
frame limit), and its expiry sweep visits every key through a thread hop; with
thousands of connections sending a heartbeat, that is memory and CPU per connection
for nothing. Here each key is a sliding-window counter: the count of the current
fixed window and of the previous one, the previous weighted by how much of it the
sliding window still covers. That is an estimate of the moving window (exact within
the first window; it can refuse or allow a little early at a window's boundary), at
O(1) memory and time per hit. Keys idle for two windows are dropped by a sweep that
runs at most once per window.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class _Counter:
    __slots__ = ("current", "previous", "window")

    def __init__(self, window: int) -> None:
        self.window = window
        self.current = 0
        self.previous = 0


class LocalWindows:
    """Sliding-window counters per (limit name, identity), for one process."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._counters: dict[tuple[str, str], tuple[_Counter, int]] = {}
        self._next_sweep = 0.0
        self._sweep_every = math.inf

    def hit(self, name: str, amount: int, per_seconds: int, identity: str) -> float | None:
        """Take one unit: None when allowed, else the seconds until one would be."""
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        self._sweep_every = min(self._sweep_every, per_seconds)
        key = (name, identity)
        window = int(now // per_seconds)
        held = self._counters.get(key)
        if held is None:
            counter = _Counter(window)
            self._counters[key] = (counter, per_seconds)
        else:
            counter = held[0]
            if counter.window != window:
                counter.previous = counter.current if counter.window == window - 1 else 0
                counter.current = 0
                counter.window = window
        into = now - window * per_seconds  # seconds into the current window
        weight = 1.0 - into / per_seconds  # share of the previous window still covered
        if counter.previous * weight + counter.current + 1 <= amount:
            counter.current += 1
            return None
        return self._retry_after(counter, amount, per_seconds, into)

    def clear(self, name: str, identity: str) -> None:
        self._counters.pop((name, identity), None)

    def __len__(self) -> int:
        return len(self._counters)

    @staticmethod
    def _retry_after(counter: _Counter, amount: int, per_seconds: int, into: float) -> float:
        left = per_seconds - into  # until the current window ends
        if counter.current + 1 > amount or not counter.previous:
            # Full on its own: after this window, what it took still weighs on the next.
            return left + per_seconds * max(0.0, 1.0 - (amount - 1) / max(counter.current, 1))
        # The previous window's weight must fall by the excess.
        excess = counter.previous * (1.0 - into / per_seconds) + counter.current + 1 - amount
        return min(left, per_seconds * excess / counter.previous)

    def _sweep(self, now: float) -> None:
        """Drop keys whose last unit is more than two windows old: they count nothing."""
        stale = [
            key
            for key, (counter, per_seconds) in self._counters.items()
            if counter.window < int(now // per_seconds) - 1
        ]
        for key in stale:
            del self._counters[key]
        self._next_sweep = now + (self._sweep_every if self._counters else 0.0)
        if not self._counters:
            self._sweep_every = math.inf
