"""Group commit: the messages of one room that queue on this node go as one transaction.

Issue 19. A room's writers are serialized by the session row (its ``last_seq``), so a
busy room stored one message per database round trip and commit, whatever the number
of senders. Here each room has at most one commit in flight, with no timer: the first
message of an idle room goes at once, alone, through the single-statement path it
always took; messages that arrive while a commit is in flight wait for it and then go
together as the next batch (up to ``MAX_BATCH``), in arrival order, with one seq bump
(``db/repositories/message_batches.py``). Each sender hears back once its own message
is committed (or refused), in seq order, so the fan-out that follows stays in order.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from db.engine import Database
from db.repositories import message_batches
from db.repositories.message_batches import BatchItem
from errors import Unavailable

log = logging.getLogger("parley.messages")

MAX_BATCH = 256

# What storing one message gives the post: the wire message, whether it is new, the
# session's model and its history revision (see ``MessageService._store``).
Stored = tuple[dict[str, Any], bool, str | None, int]
StoreOne = Callable[[BatchItem, uuid.UUID], Awaitable[Stored]]
Explain = Callable[[uuid.UUID, uuid.UUID], Awaitable[BaseException]]
ToWire = Callable[[Any], dict[str, Any]]
Replay = Callable[[Any, str], dict[str, Any]]


@dataclass
class _Room:
    queue: deque[tuple[BatchItem, asyncio.Future[Stored]]] = field(default_factory=deque)
    leader: asyncio.Task[None] | None = None


class CommitStats:
    """What the commits did (tests and diagnostics): batches and messages per batch."""

    def __init__(self) -> None:
        self.batches = 0  # units of work that stored messages (a lone one included)
        self.messages = 0
        self.largest = 0
        self.fallbacks = 0  # batches stored one by one after a failed batch
        self.sizes: list[int] = []  # the latest sizes, newest last (bounded)

    def record(self, size: int) -> None:
        self.batches += 1
        self.messages += size
        self.largest = max(self.largest, size)
        self.sizes.append(size)
        del self.sizes[:-64]


class RoomCommits:
    """Per room on this node: one commit in flight, the next batch queueing behind it."""

    def __init__(
        self,
        database: Database,
        *,
        store_one: StoreOne,
        explain: Explain,
        to_wire: ToWire,
        replay: Replay,
        max_batch: int = MAX_BATCH,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._db = database
        self._store_one = store_one  # the single-message path (one statement)
        self._explain = explain  # why a refused message was refused (NotFound, Conflict)
        self._to_wire = to_wire
        self._replay = replay
        self._max_batch = max_batch
        self._on_batch = on_batch
        self._rooms: dict[uuid.UUID, _Room] = {}
        self.stats = CommitStats()

    def queued(self, session_id: uuid.UUID) -> int:
        """Messages of the room waiting behind the commit in flight."""
        room = self._rooms.get(session_id)
        return len(room.queue) if room is not None else 0

    async def store(self, session_id: uuid.UUID, item: BatchItem) -> Stored:
        future: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        room = self._rooms.get(session_id)
        if room is None:
            room = self._rooms[session_id] = _Room()
        room.queue.append((item, future))
        if room.leader is None:
            room.leader = asyncio.ensure_future(self._lead(session_id, room))
        return await future

    async def _lead(self, session_id: uuid.UUID, room: _Room) -> None:
        """Commit what has queued, batch after batch, until the queue is empty."""
        try:
            while room.queue:
                count = min(len(room.queue), self._max_batch)
                batch = [room.queue.popleft() for _ in range(count)]
                try:
                    await self._commit(session_id, batch)
                except BaseException as exc:
                    # A bug or a cancellation: no poster of the batch may wait forever.
                    failure = exc if isinstance(exc, Exception) else Unavailable("cancelled")
                    for _, future in batch:
                        _settle(future, error=failure)
                    raise
        finally:
            room.leader = None
            if room.queue:  # cancelled (shutdown): nobody will commit these
                for _, future in room.queue:
                    if not future.done():
                        future.set_exception(Unavailable("the server is shutting down"))
                room.queue.clear()
            if self._rooms.get(session_id) is room:
                del self._rooms[session_id]

    async def _commit(
        self, session_id: uuid.UUID, batch: list[tuple[BatchItem, asyncio.Future[Stored]]]
    ) -> None:
        self.stats.record(len(batch))
        if self._on_batch is not None:
            self._on_batch(len(batch))
        if len(batch) == 1:
            await self._one_by_one(session_id, batch)
            return
        # SQLite: one transaction (it holds the write lock from BEGIN). PostgreSQL:
        # single statements, the write one of them (see ``append_member_batch``).
        unit = self._db.transaction() if self._db.in_process else self._db.single_statement()
        try:
            async with unit as session:
                appended = await message_batches.append_member_batch(
                    session, session_id, [item for item, _ in batch]
                )
        except Unavailable as exc:
            # Rolled back (or never reached the database): nothing of it is stored.
            for _, future in batch:
                _settle(future, error=exc)
            return
        except Exception as exc:
            # One bad row (a client_msg_id another node stored meanwhile, say) rolled
            # the whole batch back: each alone, so that only the offender fails.
            log.info("a batch of %d failed (%s); storing one by one", len(batch), exc)
            self.stats.fallbacks += 1
            await self._one_by_one(session_id, batch)
            return
        if appended is None:  # the session changed between the reads and the write
            self.stats.fallbacks += 1
            await self._one_by_one(session_id, batch)
            return
        # Settled in seq order within one turn of the loop: the posters resume in that
        # order, so their fan-out (and the turn cache) sees the room's order.
        refused = []
        for (item, future), outcome in zip(batch, appended.outcomes, strict=True):
            if outcome.message is None:
                refused.append((item, future))
            elif outcome.created:
                wire = self._to_wire(outcome.message)
                _settle(future, (wire, True, appended.session_model, appended.history_revision))
            else:
                try:
                    _settle(future, (self._replay(outcome.message, item.content), False, None, 0))
                except Exception as exc:  # the same key with other content: Conflict
                    _settle(future, error=exc)
        for item, future in refused:
            await self._refuse(session_id, item, future)

    async def _one_by_one(
        self, session_id: uuid.UUID, batch: list[tuple[BatchItem, asyncio.Future[Stored]]]
    ) -> None:
        for item, future in batch:
            try:
                stored = await self._store_one(item, session_id)
            except Exception as exc:
                _settle(future, error=exc)
            else:
                _settle(future, stored)

    async def _refuse(
        self, session_id: uuid.UUID, item: BatchItem, future: asyncio.Future[Stored]
    ) -> None:
        try:
            error = await self._explain(session_id, item.user_id)
        except Exception as exc:
            error = exc
        _settle(future, error=error)


def _settle(
    future: asyncio.Future[Stored],
    result: Stored | None = None,
    *,
    error: BaseException | None = None,
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
        future.exception()  # retrieved: the poster may have gone
    else:
        assert result is not None
        future.set_result(result)
