"""A pybreaker ``CircuitBreaker`` driven from async code.

pybreaker guards synchronous calls (``breaker.call(func)``); a streamed generation is
neither a sync call nor a single await, so this adapter keeps pybreaker's storage, its
counters and its state machine, and feeds it outcomes by hand:

- ``await admit(wait_s)`` before a call: closed passes; open raises
  ``Unavailable("circuit open", retry_after=remaining)`` until ``reset_timeout`` has
  passed, then half-opens and makes this call the one trial (the probe). Callers that
  arrive while the probe is in flight wait for its verdict, at most ``wait_s``: a
  good probe closes the circuit and lets them all through, a failed one re-opens it
  and they fail fast with "circuit open". A caller is told "circuit half-open" only
  when the probe has not answered within its own ``wait_s``.
- ``record_success()`` / ``record_failure(exc)`` after it, through the current state's
  ``_handle_success`` / ``_handle_error`` so pybreaker's own rules apply (``fail_max``
  consecutive failures open; a failed trial re-opens; a successful one closes);
- ``release(trial)`` when a call ends with no verdict (cancelled before any answer):
  the next caller, or one that is waiting, becomes the probe.

Time comes from ``clock`` (monotonic seconds; injectable so that tests move it rather
than sleep through ``reset_s``). pybreaker stamps ``opened_at`` with the wall clock;
the reset timeout is counted here, from a listener that notes ``clock()`` at each
transition to open, and pybreaker's own ``before_call`` (which reads ``opened_at``) is
never used. Everything runs on the event loop thread, so no lock is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import pybreaker

from llm.provider import UpstreamUnavailable

Clock = Callable[[], float]


class _StateListener(pybreaker.CircuitBreakerListener):
    def __init__(self, callback: Callable[[str, str], None]) -> None:
        self._callback = callback

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        self._callback(cb.name or "", new_state.name)


class UpstreamBreaker:
    def __init__(
        self,
        name: str,
        fail_max: int,
        reset_s: float,
        on_change: Callable[[str, str], None] | None = None,
        *,
        clock: Clock = time.monotonic,
    ) -> None:
        self.name = name
        self._clock = clock
        self._opened_at: float | None = None
        self._trial: object | None = None
        # Set when the probe in flight has a verdict (or gives up without one).
        self._verdict: asyncio.Event | None = None
        listeners: list[pybreaker.CircuitBreakerListener] = [_StateListener(self._on_change)]
        if on_change:
            listeners.append(_StateListener(on_change))
        self._cb = pybreaker.CircuitBreaker(
            fail_max=fail_max, reset_timeout=reset_s, name=name, listeners=listeners
        )

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half-open``."""
        return self._cb.current_state

    @property
    def fail_counter(self) -> int:
        return self._cb.fail_counter

    def remaining_s(self) -> float:
        """Seconds until an open circuit lets a trial call through."""
        if self.state != pybreaker.STATE_OPEN or self._opened_at is None:
            return 0.0
        elapsed = self._clock() - self._opened_at
        return max(0.0, self._cb.reset_timeout - elapsed)

    async def admit(self, wait_s: float = 0.0) -> object | None:
        """Let a call through or raise ``Unavailable``; returns a token when the call is
        the half-open circuit's probe (``None`` otherwise), for ``release``."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + wait_s
        while True:
            if self.state == pybreaker.STATE_OPEN:
                remaining = self.remaining_s()
                if remaining > 0:
                    raise UpstreamUnavailable(
                        f"circuit open: the model provider {self.name} is failing",
                        retryable=False,
                        retry_after=remaining,
                    )
                self._cb.half_open()
            if self.state != pybreaker.STATE_HALF_OPEN:
                return None
            if self._trial is None:
                self._trial = trial = object()
                self._verdict = asyncio.Event()
                return trial
            # A probe is in flight: its verdict decides for this caller too.
            verdict = self._verdict
            assert verdict is not None
            left = give_up_at - loop.time()
            if left > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(left):
                        await verdict.wait()
                    continue
            raise UpstreamUnavailable(
                f"circuit half-open: a trial call to {self.name} has not answered yet",
                retryable=False,
                retry_after=1.0,
            )

    def record_success(self) -> None:
        self._cb.state._handle_success()
        self._settle_trial()

    def record_failure(self, exc: BaseException) -> None:
        # pybreaker signals "this failure tripped the circuit" by raising; the state
        # change is what matters here, the caller already has its own error.
        with contextlib.suppress(pybreaker.CircuitBreakerError):
            self._cb.state._handle_error(exc, reraise=False)
        self._settle_trial()

    def release(self, trial: object | None) -> None:
        """A call ends without a verdict; if it was the probe, another may take over."""
        if trial is not None and trial is self._trial:
            self._settle_trial()

    def _settle_trial(self) -> None:
        # A verdict while half-open has just closed or re-opened the circuit (pybreaker's
        # rule): the waiters wake and look at the new state.
        self._trial = None
        if self._verdict is not None:
            self._verdict.set()
            self._verdict = None

    def _on_change(self, _name: str, state: str) -> None:
        if state == pybreaker.STATE_OPEN:
            self._opened_at = self._clock()
