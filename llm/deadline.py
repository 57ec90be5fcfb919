"""A deadline that moves with every token but arms one timer.

A streamed answer's idle deadline moves forward each time content arrives. Wrapping
every read in ``asyncio.timeout_at`` costs a ``Timeout``, a timer handle and a heap
push and cancel per SSE event; at tens of thousands of events a second that was a
sixth of the relay's CPU. Here ``extend`` only stores a later time (an earlier one
re-arms the timer): the one timer, when it fires early, re-arms itself for the stored
time, and only once that time has truly passed while a read is waiting does it cancel
the reading task, which ``read_finished`` turns into ``TimeoutError``.
"""

from __future__ import annotations

import asyncio


class MovingDeadline:
    def __init__(self, when: float) -> None:
        self._loop = asyncio.get_running_loop()
        self.when = when
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[object] | None = None
        self._fired = False

    def extend(self, when: float) -> None:
        """Move the deadline (usually later, which costs nothing but this store)."""
        if when < self.when and self._handle is not None:
            # Earlier than the armed timer (the idle deadline after the first token is
            # shorter than the first-token one): a stall must not wait for the old time.
            self._handle.cancel()
            self._handle = self._loop.call_at(when, self._check)
        self.when = when

    def read_started(self) -> None:
        """Call before awaiting the stream; raises ``TimeoutError`` if already late."""
        if self._loop.time() >= self.when:
            raise TimeoutError
        self._task = asyncio.current_task()
        if self._handle is None:
            self._handle = self._loop.call_at(self.when, self._check)

    def read_finished(self, exc: BaseException | None = None) -> None:
        """Call after the read; with the read's ``CancelledError``, raises ``TimeoutError``
        if this deadline caused it (and re-raises nothing otherwise)."""
        task, self._task = self._task, None
        if self._fired and isinstance(exc, asyncio.CancelledError) and task is not None:
            self._fired = False
            if task.uncancel() == 0:
                raise TimeoutError from exc

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self) -> None:
        self._handle = None
        if self._loop.time() < self.when:
            self._handle = self._loop.call_at(self.when, self._check)
        elif self._task is not None and not self._fired:
            # Only a waiting read is cancelled; between reads the next ``read_started``
            # sees the deadline has passed.
            self._fired = True
            self._task.cancel()
