"""The stream log: each generation's deltas, kept so that a client can resume.

The generator opens a log when a stream starts, appends every delta it broadcasts
and finishes it with the ``stream.end`` frame; a resuming client reads from the
offset it wants. A finished log is kept for the TTL, then it is gone, and so is an
unfinished one whose writer stopped writing (a crashed node): every write renews
the TTL. ``MemoryStreamLog`` serves a single node, ``RedisStreamLog`` every node.

Exactly one node stores each stream's answer: its writer at the end, or, when the
writer's node died, the node that takes its streams over. Whichever ``settle``s the
stream first does it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(slots=True)
class StreamSnapshot:
    stream_id: str
    session_id: str
    deltas: list[tuple[int, str]]  # (index, text) for every index >= the offset read
    end: dict[str, Any] | None  # the stream.end frame once finished
    start: dict[str, Any] | None = field(default=None)  # the stream.start frame

    @property
    def next_offset(self) -> int | None:
        """The index after the last delta read, or None when none was."""
        return self.deltas[-1][0] + 1 if self.deltas else None


class StreamLog(Protocol):
    async def open(self, stream_id: str, session_id: str, start_frame: dict[str, Any]) -> None:
        """Starts a log; opening an existing stream id starts it afresh."""

    async def append(self, stream_id: str, index: int, text: str) -> None:
        """Records delta ``index``; indices come 0, 1, 2, … (``ValueError`` otherwise).

        Appending to a log that is not open (expired) records nothing. Raises
        ``StreamTakenOver`` once another node has settled the stream."""

    async def finish(self, stream_id: str, end_frame: dict[str, Any]) -> None:
        """Records the end; the log is kept for the TTL afterwards, then it is gone."""

    async def read(self, stream_id: str, offset: int) -> StreamSnapshot | None:
        """Deltas with index >= ``offset``; None when the stream is unknown or expired."""

    async def running(self, session_id: str) -> list[tuple[str, int]]:
        """``(stream_id, number of deltas so far)`` for the session's unfinished streams."""

    async def settle(self, stream_id: str) -> bool:
        """Claims the storing of the stream's answer: True for the first caller only.
        Call it after ``open``, which starts a stream afresh."""

    async def claim_orphans(self, node_id: str) -> list[StreamSnapshot]:
        """The unfinished streams the dead node ``node_id`` was writing, each settled
        for the caller (so each goes to one caller only), including those the dead node
        had settled itself: it may have died storing the answer. A stream whose log
        cannot be trusted comes with no deltas."""

    async def close(self) -> None: ...


class StreamTakenOver(Exception):
    """Another node settled this stream: its writer was taken for dead."""


def check_index(stream_id: str, expected: int, index: int) -> None:
    if index != expected:
        raise ValueError(f"stream {stream_id}: delta {index} appended where {expected} was due")
