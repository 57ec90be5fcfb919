"""Single-node stream log in a dictionary, expired lazily."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from realtime.keys import STREAM_LOG_TTL_S
from realtime.stream_log import StreamSnapshot, check_index


@dataclass(slots=True)
class _Log:
    session_id: str
    start: dict[str, Any]
    deadline: float
    deltas: list[str] = field(default_factory=list)
    end: dict[str, Any] | None = None
    settled: bool = False


class MemoryStreamLog:
    """A ``StreamLog`` for one process."""

    def __init__(
        self, ttl_s: float = STREAM_LOG_TTL_S, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._logs: dict[str, _Log] = {}

    async def open(self, stream_id: str, session_id: str, start_frame: dict[str, Any]) -> None:
        self._purge()
        self._logs[stream_id] = _Log(session_id, start_frame, self._clock() + self._ttl_s)

    async def append(self, stream_id: str, index: int, text: str) -> None:
        log = self._live(stream_id)
        if log is None or log.end is not None:
            return
        check_index(stream_id, len(log.deltas), index)
        log.deltas.append(text)
        log.deadline = self._clock() + self._ttl_s

    async def finish(self, stream_id: str, end_frame: dict[str, Any]) -> None:
        log = self._live(stream_id)
        if log is None:
            return
        log.end = end_frame
        log.deadline = self._clock() + self._ttl_s

    async def read(self, stream_id: str, offset: int) -> StreamSnapshot | None:
        log = self._live(stream_id)
        if log is None:
            return None
        start = max(0, offset)
        deltas = [(start + i, text) for i, text in enumerate(log.deltas[start:])]
        return StreamSnapshot(stream_id, log.session_id, deltas, log.end, log.start)

    async def running(self, session_id: str) -> list[tuple[str, int]]:
        self._purge()
        return [
            (stream_id, len(log.deltas))
            for stream_id, log in self._logs.items()
            if log.session_id == session_id and log.end is None
        ]

    async def settle(self, stream_id: str) -> bool:
        log = self._live(stream_id)
        if log is None:
            return True  # expired, or never opened: no one else can hold it
        settled, log.settled = log.settled, True
        return not settled

    async def claim_orphans(self, node_id: str) -> list[StreamSnapshot]:
        return []  # one process: the writer of every stream here is this node

    async def close(self) -> None:
        self._logs.clear()

    def _live(self, stream_id: str) -> _Log | None:
        log = self._logs.get(stream_id)
        if log is not None and log.deadline <= self._clock():
            del self._logs[stream_id]
            return None
        return log

    def _purge(self) -> None:
        now = self._clock()
        for stream_id in [sid for sid, log in self._logs.items() if log.deadline <= now]:
            del self._logs[stream_id]
