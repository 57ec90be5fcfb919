"""Releasing a room's messages in ``seq`` order, whatever order they arrive in.

Messages of one room are stored with consecutive ``seq`` numbers, possibly by
several nodes, and reach each node through pub/sub, where publications from
different nodes may interleave. The hub offers each one here and sends out what
comes back. When a gap stays open (a publication was lost, or is slow), the hub
waits briefly, loads the missing messages from the database and ``fill``s them in,
or gives up on them with ``skip_to``. Pure code: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, TypeVar

T = TypeVar("T")


class SeqReorderer(Generic[T]):
    """Holds items back until every lower ``seq`` has been released."""

    def __init__(self, last_seq: int) -> None:
        self._last_seq = last_seq
        self._held: dict[int, T] = {}

    @property
    def last_seq(self) -> int:
        """The highest ``seq`` released or skipped; everything up to it is done."""
        return self._last_seq

    @property
    def held(self) -> int:
        """How many items wait for a gap to close."""
        return len(self._held)

    def offer(self, seq: int, item: T) -> list[T]:
        """The items now deliverable, in order; a seq already seen is dropped."""
        if seq <= self._last_seq or seq in self._held:
            return []
        if seq != self._last_seq + 1:
            self._held[seq] = item
            return []
        self._last_seq = seq
        released = [item]
        if self._held:
            self._release_following(released)
        return released

    def fill(self, items: Iterable[tuple[int, T]]) -> list[T]:
        """Offers many ``(seq, item)`` at once (loaded from the database); released in order."""
        released: list[T] = []
        for seq, item in sorted(items, key=lambda pair: pair[0]):
            released.extend(self.offer(seq, item))
        return released

    def missing(self) -> tuple[int, int] | None:
        """The first gap, ``(first, last)`` inclusive, when items wait behind it."""
        if not self._held:
            return None
        return self._last_seq + 1, min(self._held) - 1

    def skip_to(self, seq: int) -> list[T]:
        """Gives up on everything up to ``seq``; returns what that lets through."""
        if seq <= self._last_seq:
            return []
        self._last_seq = seq
        for stale in [held for held in self._held if held <= seq]:
            del self._held[stale]
        released: list[T] = []
        self._release_following(released)
        return released

    def _release_following(self, released: list[T]) -> None:
        held = self._held
        following = self._last_seq + 1
        while following in held:
            released.append(held.pop(following))
            following += 1
        self._last_seq = following - 1
