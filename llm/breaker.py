"""A pybreaker ``CircuitBreaker`` driven from async code.

pybreaker guards synchronous calls (``breaker.call(func)``); a streamed generation is
neither a sync call nor a single await, so this adapter keeps pybreaker's storage, its
counters and its state machine, and feeds it outcomes by hand:

- ``admit()`` before a call: closed passes; open raises ``Unavailable("circuit open",
  retry_after=remaining)`` until ``reset_timeout`` has passed, then half-opens and
  admits exactly one trial call (others fail fast until the trial has a verdict);
- ``record_success()`` / ``record_failure(exc)`` after it, through the current state's
  ``_handle_success`` / ``_handle_error`` so pybreaker's own rules apply (``fail_max``
  consecutive failures open; a failed trial re-opens; a successful one closes);
- ``release()`` when a call ends with no verdict (cancelled before any answer).

Everything runs on the event loop thread, so the trial flag needs no lock.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import UTC, datetime

import pybreaker

from llm.provider import UpstreamUnavailable


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
    ) -> None:
        listeners = [_StateListener(on_change)] if on_change else []
        self.name = name
        self._cb = pybreaker.CircuitBreaker(
            fail_max=fail_max, reset_timeout=reset_s, name=name, listeners=listeners
        )
        self._trial_in_flight = False

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half-open``."""
        return self._cb.current_state

    @property
    def fail_counter(self) -> int:
        return self._cb.fail_counter

    def remaining_s(self) -> float:
        """Seconds until an open circuit lets a trial call through."""
        opened_at = self._cb._state_storage.opened_at
        if self.state != pybreaker.STATE_OPEN or opened_at is None:
            return 0.0
        elapsed = (datetime.now(UTC) - opened_at).total_seconds()
        return max(0.0, self._cb.reset_timeout - elapsed)

    def admit(self) -> None:
        if self.state == pybreaker.STATE_OPEN:
            remaining = self.remaining_s()
            if remaining > 0:
                raise UpstreamUnavailable(
                    f"circuit open: the model provider {self.name} is failing",
                    retryable=False,
                    retry_after=remaining,
                )
            self._cb.half_open()
        if self.state == pybreaker.STATE_HALF_OPEN:
            if self._trial_in_flight:
                raise UpstreamUnavailable(
                    f"circuit half-open: a trial call to {self.name} is in flight",
                    retryable=False,
                    retry_after=1.0,
                )
            self._trial_in_flight = True

    def record_success(self) -> None:
        self._trial_in_flight = False
        self._cb.state._handle_success()

    def record_failure(self, exc: BaseException) -> None:
        self._trial_in_flight = False
        # pybreaker signals "this failure tripped the circuit" by raising; the state
        # change is what matters here, the caller already has its own error.
        with contextlib.suppress(pybreaker.CircuitBreakerError):
            self._cb.state._handle_error(exc, reraise=False)

    def release(self) -> None:
        self._trial_in_flight = False
