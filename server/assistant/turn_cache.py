"""This node's copy of what answering a turn reads, per session.

Reading a session's settings, summary and newest few hundred messages costs a few
milliseconds through the database driver, and it sits in front of every answer's
first token. So each node keeps, for the sessions it answers in, the last
``TurnHeader`` and turns it read, and extends them with every message it stores
itself (questions and answers).

A copy is only a guess. It is used to start an answer while the question is being
stored; the store then says which ``last_seq`` and ``history_revision`` the question
came after (``Snapshot.fits``), and an answer built on anything else is asked again
from a fresh read. A stale copy costs a discarded upstream request, never a wrong
context: messages stored by other nodes show up as a gap in ``seq``, and every other
change (deleted messages, summaries, settings, documents, members) bumps the
revision in the database.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from db.repositories.messages import Turn, TurnHeader
from realtime import envelope as kinds
from realtime.envelope import Envelope


def turn_of(message: dict[str, Any]) -> Turn:
    """A stored message's wire form as the copy keeps it."""
    return Turn(
        uuid.UUID(message["id"]),
        message["seq"],
        message["role"],
        message["content"],
        message.get("client_msg_id"),
    )


def header_fits(header: TurnHeader, question_seq: int, revision: int) -> bool:
    """Whether history read as of ``header`` is exactly the history before the question
    stored as ``question_seq`` under ``revision``: nothing else came in between. (A
    read that already saw the question itself fits too: turns skip it by id.)"""
    last = header.last_seq
    return header.history_revision == revision and last in (question_seq - 1, question_seq)


@dataclass(frozen=True)
class Snapshot:
    """A session's header and its newest turns up to ``header.last_seq``, oldest first."""

    header: TurnHeader
    turns: tuple[Turn, ...]

    def fits(self, question_seq: int, revision: int) -> bool:
        return header_fits(self.header, question_seq, revision)

    def holds_key(self, client_msg_id: str, other_than: uuid.UUID) -> bool:
        return any(t.client_msg_id == client_msg_id and t.id != other_than for t in self.turns)


# What holding one turn costs besides its text: the tuple, its UUID and strings.
TURN_OVERHEAD_BYTES = 300


@dataclass(eq=False)
class _Entry:
    header: TurnHeader
    turns: deque[Turn]
    members: set[uuid.UUID] = field(default_factory=set)
    size: int = 0


class TurnCache:
    """Snapshots by session, least recently used first out, bounded in (approximate)
    bytes: each turn's text plus ``turn_overhead`` for the objects that hold it."""

    def __init__(
        self, *, window: int, max_bytes: int, turn_overhead: int = TURN_OVERHEAD_BYTES
    ) -> None:
        self._window = window
        self._max_bytes = max_bytes
        self._turn_overhead = turn_overhead
        self._entries: OrderedDict[uuid.UUID, _Entry] = OrderedDict()
        self._size = 0

    @property
    def size(self) -> int:
        return self._size

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, session_id: uuid.UUID, member_id: uuid.UUID) -> Snapshot | None:
        """The copy for ``session_id``, if ``member_id`` was seen writing or reading it."""
        entry = self._entries.get(session_id)
        if entry is None or member_id not in entry.members:
            return None
        self._entries.move_to_end(session_id)
        return Snapshot(entry.header, tuple(entry.turns))

    def admit(self, session_id: uuid.UUID, member_id: uuid.UUID) -> bool:
        """Let ``member_id`` (checked by the caller) use the copy; False if there is none."""
        entry = self._entries.get(session_id)
        if entry is None:
            return False
        entry.members.add(member_id)
        return True

    def put(self, session_id: uuid.UUID, snapshot: Snapshot, member_id: uuid.UUID) -> None:
        """Keep what a database read returned (``member_id`` was checked by it)."""
        if self._max_bytes <= 0:
            return
        current = self._entries.get(session_id)
        if current is not None and _newer(current.header, snapshot.header):
            current.members.add(member_id)
            return  # a slower read must not replace a copy that has moved on
        self.drop(session_id)
        entry = _Entry(snapshot.header, deque(maxlen=self._window), {member_id})
        for turn in snapshot.turns[-self._window :]:
            self._push(entry, turn)
        self._entries[session_id] = entry
        self._evict()

    def expects(self, session_id: uuid.UUID, seq: int) -> bool:
        """Whether the message stored as ``seq`` is the next one the copy lacks (worth
        decoding to pass to ``appended``). A copy that missed messages before it is
        dropped here; one that holds it already, or no copy, needs nothing."""
        entry = self._entries.get(session_id)
        if entry is None or entry.header.last_seq >= seq:
            return False
        if entry.header.last_seq < seq - 1:
            self.drop(session_id)
            return False
        return True

    def appended(
        self,
        session_id: uuid.UUID,
        turn: Turn,
        revision: int | None,
        author_id: uuid.UUID | None,
    ) -> None:
        """``turn`` was stored (committed) under ``revision``: extend the copy, or drop it
        if the copy cannot tell what came before. ``revision`` is None for a message
        heard from another node: the copy keeps its own, and the next question's store
        tells whether anything else changed meanwhile."""
        entry = self._entries.get(session_id)
        if entry is None:
            return
        header = entry.header
        stale = revision is not None and header.history_revision != revision
        if stale or header.last_seq < turn.seq - 1:
            self.drop(session_id)
            return
        if author_id is not None:
            entry.members.add(author_id)
        if header.last_seq >= turn.seq:
            return  # the read that filled the copy came after this message was stored
        self._push(entry, turn)
        entry.header = header._replace(last_seq=turn.seq)
        self._evict()

    def drop(self, session_id: uuid.UUID) -> None:
        entry = self._entries.pop(session_id, None)
        if entry is not None:
            self._size -= entry.size

    def _push(self, entry: _Entry, turn: Turn) -> None:
        if len(entry.turns) == entry.turns.maxlen:
            gone = len(entry.turns[0].content) + self._turn_overhead
            entry.size -= gone
            self._size -= gone
        entry.turns.append(turn)
        added = len(turn.content) + self._turn_overhead
        entry.size += added
        self._size += added

    def _evict(self) -> None:
        while self._size > self._max_bytes and self._entries:
            _, entry = self._entries.popitem(last=False)
            self._size -= entry.size


def _newer(held: TurnHeader, read: TurnHeader) -> bool:
    return (held.history_revision, held.last_seq) > (read.history_revision, read.last_seq)


def remember_stored_messages(turns: TurnCache) -> Callable[[Envelope], None]:
    """The hub's ``on_released``: extend this node's copies of recent turns with
    messages stored on other nodes (questions, and answers in their ``stream.end``), so
    that a conversation whose members sit on different nodes keeps starting answers
    from the copy."""

    def on_released(env: Envelope) -> None:
        if env.seq is None or env.kind not in (kinds.MESSAGE, kinds.STREAM):
            return
        session_id = uuid.UUID(env.session_id)
        # Most releases need no decoding: the message is this node's own (the copy has
        # it), or the session has no copy here.
        if not turns.expects(session_id, env.seq):
            return
        message = orjson.loads(env.frame).get("message")
        if message:
            turns.appended(session_id, turn_of(message), None, None)

    return on_released
