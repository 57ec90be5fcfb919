"""Answers whose store failed because the database was out of reach.

A generation stores its answer before its ``stream.end``. When the database cannot
be reached then, the stream ends for the room at once (``finish_reason: "error"``,
``error.code: "unavailable"``, no ``message``) and the answer is kept here, on the
node that produced it, and stored when the database is back, retried with backoff.
Once stored, it goes to the room as a ``message`` frame with its ``seq`` (it was
never in a ``stream.end``, so this is its first and only delivery), and it is in the
history like any other.

What is not kept: an answer held here when its node stops for good (a SIGKILL, or a
shutdown while the database is still down, which logs each answer it drops). Its
deltas stay in the stream log for ``STREAM_LOG_TTL_S``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from typing import Any, NamedTuple

from db.engine import Database
from db.repositories import messages as messages_repo
from db.repositories import usage as usage_repo
from db.repositories.versions import NewVersion
from errors import Unavailable
from realtime.hub import Hub
from server.assistant.answers import store_version
from server.assistant.turn_cache import TurnCache, turn_of
from server.metrics import Metrics
from server.services.wire import message_to_wire

log = logging.getLogger("parley.assistant")

FIRST_RETRY_S = 0.5

STORED_LATER = (
    "the answer could not be stored (the database is unreachable); it is stored, "
    "and sent as a message, when the database is back"
)


@dataclass(eq=False)
class LateAnswer:
    """Everything a generation writes: the answer (if any text) and its usage event;
    kept as it is when the database is out of reach."""

    session_id: uuid.UUID
    user_id: uuid.UUID
    reply_to: uuid.UUID
    text: str
    status: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    ttft_ms: int | None
    duration_ms: int
    outcome: str
    # A failed answer's code and message: stored (even without text) so it shows in
    # place, with a retry.
    error: tuple[str, str] | None = None
    # A regeneration's or an edited question's answer: a new version of the stored
    # answer to ``reply_to`` (``server.assistant.answers.store_version``).
    versioned: bool = False
    reply_version: int | None = None

    @property
    def stored(self) -> bool:
        return bool(self.text) or self.error is not None


class Written(NamedTuple):
    """What ``write_answer`` stored."""

    message: dict[str, Any] | None  # the answer as the wire shows it; None if not stored
    seq: int | None  # None for a new version: it keeps the answer's place
    history_revision: int
    usage_event_id: uuid.UUID
    new_version: bool = False


async def write_answer(
    database: Database, answer: LateAnswer, *, once: bool = False
) -> Written | None:
    """Store the answer (if it has text) and its usage event, in one transaction: the
    generation does at once, ``LateAnswers`` once the database is back. With ``once``,
    nothing (None) if the answer is stored already."""
    async with database.transaction() as session:
        if once and await messages_repo.find_answer(session, answer.session_id, answer.reply_to):
            return None
        written = await _write(session, answer)
    return written


async def _write(session: Any, answer: LateAnswer) -> Written:  # session: db's AsyncSession
    stored: dict[str, Any] | None = None
    seq: int | None = None
    revision = 0
    new_version = False
    if answer.stored and answer.versioned:
        stored, seq, revision, new_version = await store_version(
            session,
            answer.session_id,
            answer.reply_to,
            NewVersion(
                answer.text,
                answer.model,
                answer.status,
                answer.error[0] if answer.error else None,
                answer.error[1] if answer.error else None,
                answer.reply_version,
            ),
        )
    elif answer.stored:
        appended = await messages_repo.append_answer(
            session,
            session_id=answer.session_id,
            content=answer.text,
            status=answer.status,
            model=answer.model,
            reply_to=answer.reply_to,
            error=answer.error,
        )
        stored, seq = message_to_wire(appended.message), appended.message.seq
        revision = appended.history_revision
    event = await usage_repo.record_usage(
        session,
        user_id=answer.user_id,
        session_id=answer.session_id,
        message_id=uuid.UUID(stored["id"]) if stored else None,
        model=answer.model,
        prompt_tokens=answer.prompt_tokens,
        completion_tokens=answer.completion_tokens,
        ttft_ms=answer.ttft_ms,
        duration_ms=answer.duration_ms,
        outcome=answer.outcome,
    )
    return Written(stored, seq, revision, event.id, new_version)


class LateAnswers:
    def __init__(
        self,
        database: Database,
        hub: Hub,
        turns: TurnCache,
        metrics: Metrics,
        *,
        retry_max_s: float,
    ) -> None:
        self._db = database
        self._hub = hub
        self._turns = turns
        self._metrics = metrics
        self._retry_max_s = retry_max_s
        self._waiting: dict[LateAnswer, asyncio.Task[None]] = {}

    def keep(self, answer: LateAnswer) -> None:
        """Store ``answer`` when the database is back."""
        task = asyncio.create_task(self._retry(answer), name=f"late-answer-{answer.reply_to}")
        self._waiting[answer] = task
        task.add_done_callback(lambda _: self._waiting.pop(answer, None))

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def close(self) -> None:
        """On shutdown: one last try for each answer still waiting; what fails is lost
        (logged)."""
        left = list(self._waiting.items())
        for _, task in left:
            task.cancel()
        await asyncio.gather(*(task for _, task in left), return_exceptions=True)
        for answer, _ in left:
            try:
                await self._store(answer)
            except Exception as exc:
                log.error(
                    "answer to %s (%d characters) lost at shutdown: %s",
                    answer.reply_to,
                    len(answer.text),
                    exc,
                )

    async def _retry(self, answer: LateAnswer) -> None:
        wait_s = FIRST_RETRY_S
        while True:
            await asyncio.sleep(wait_s)
            try:
                await self._store(answer)
            except Unavailable:
                wait_s = min(wait_s * 2, self._retry_max_s)
                continue
            except Exception:
                log.exception("storing the answer to %s failed; it is lost", answer.reply_to)
            return

    async def _store(self, answer: LateAnswer) -> None:
        # A try that timed out may have committed all the same: never store twice.
        written = await write_answer(self._db, answer, once=True)
        stored = written.message if written is not None else None
        if written is None or stored is None:
            return
        log.info("stored the answer to %s once the database was back", answer.reply_to)
        self._turns.appended(answer.session_id, turn_of(stored), written.history_revision, None)
        self._metrics.messages_stored.labels("assistant").inc()
        await self._hub.publish_message(str(answer.session_id), stored)
