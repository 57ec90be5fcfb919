"""Versions of a message: regenerate an answer, edit a question, show another version.

Every version is stored (``db.repositories.versions``); the message row holds the one
shown, which is what history, the context of later turns, summaries and memory read.
Each change reaches every member live as ``message.version``. A regeneration or an
edit starts a new answer to the question; the answers to it still running anywhere
are stopped, and what they wrote is dropped: the new answer replaces them.

Memory follows the version shown: a change deletes the items learned from the
question's exchange (``db.repositories.versions``), and the exchange now shown is
learned from again: after the new answer of a regeneration or an edit, at once after
a switch of version (``Regenerator.relearn``).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from db.engine import Database
from db.models import Message
from db.repositories import messages as messages_repo
from db.repositories import sessions as sessions_repo
from db.repositories import versions as versions_repo
from db.repositories.versions import NewVersion
from errors import BadRequest, Conflict, Forbidden, NotFound
from server.services.accounts import Principal
from server.services.messages import PendingAnswer
from server.services.wire import message_to_wire, version_to_wire


class VersionFanout(Protocol):
    async def publish_version(self, session_id: str, message: dict[str, Any]) -> None: ...


class Regenerator(Protocol):
    def prepare(
        self,
        principal: Principal,
        session_id: uuid.UUID,
        question: dict[str, Any],
        *,
        force_search: bool,
        versioned: bool = False,
        reply_version: int | None = None,
        slot: str | None = None,
    ) -> PendingAnswer: ...

    async def reserve(self, principal: Principal) -> str | None: ...

    def release(self, principal: Principal, slot: str | None) -> None: ...

    async def supersede(self, session_id: str, question_id: str, keep_stream: str) -> None: ...

    def relearn(
        self,
        principal: Principal,
        session_id: uuid.UUID,
        question: dict[str, Any],
        answer: dict[str, Any],
    ) -> None: ...


@dataclass(frozen=True)
class VersionChange:
    """What a change left: the message as shown now, and the answer's stream if one began."""

    message: dict[str, Any]
    stream_id: str | None = None


class VersionService:
    def __init__(
        self,
        database: Database,
        *,
        fanout: VersionFanout,
        validate: Callable[[object], str],
        assistant: Regenerator,
        quota: Callable[[str], Awaitable[None]] | None = None,
        answer_gate: Callable[[uuid.UUID, uuid.UUID], Awaitable[None]] | None = None,
        history_changed: Callable[[uuid.UUID], None] | None = None,
        memory_forgotten: Callable[[uuid.UUID], Awaitable[None]] | None = None,
    ) -> None:
        self._db = database
        self._fanout = fanout
        # ``MessageService``'s content rules, so an edit is held to what a post is.
        self._validate = validate
        self._quota = quota
        # The budget check a new message gets (``BudgetService.check``): a new answer
        # is refused before a version is stored or the model is asked, not left to
        # fail at the meter with a failed version stored.
        self._answer_gate = answer_gate
        # Drops this node's copy of the session's turns (``TurnCache.drop``).
        self._history_changed = history_changed
        # Drops a user's cached view of memory (``MemoryService.forgotten``): a change
        # of version deleted what was learned from the version it replaced.
        self._memory_forgotten = memory_forgotten
        self._assistant = assistant

    async def regenerate(
        self, principal: Principal, session_id: uuid.UUID, message_id: uuid.UUID
    ) -> VersionChange:
        """A new answer to the question ``message_id`` answers (or is): stored as the
        answer's next version and shown. Also the retry of a failed answer."""
        assistant = self._require_assistant()
        await self._admit(principal, session_id)
        async with self._db.transaction() as session:
            chat, message = await self._target(session, principal, session_id, message_id)
            question: Message | None = message
            if message.role == "assistant":
                if message.reply_to is None:
                    raise BadRequest("this answer answers no question")
                question = await messages_repo.get_message(session, session_id, message.reply_to)
            if question is None or question.role != "user" or question.deleted_at is not None:
                raise Conflict("the question of this answer is gone")
            asked = message_to_wire(question)
            shown = message_to_wire(message)
        stream_id = await self._answer(
            assistant, principal, session_id, asked, chat.model, chat.history_revision
        )
        return VersionChange(shown, stream_id)

    async def edit(
        self, principal: Principal, session_id: uuid.UUID, message_id: uuid.UUID, content: object
    ) -> VersionChange:
        """The author's question, changed: its next version, shown, and a new answer."""
        assistant = self._require_assistant()
        text = self._validate(content)
        await self._admit(principal, session_id)
        async with self._db.transaction() as session:
            chat, message = await self._target(session, principal, session_id, message_id)
            if message.role != "user":
                raise BadRequest("only a question can be edited; regenerate an answer")
            if message.user_id != principal.user_id:
                raise Forbidden("only its author can edit a message")
            await versions_repo.add_version(
                session, message, NewVersion(text, message.model, "complete"), show=True
            )
            edited = message_to_wire(message)
            revision = chat.history_revision + 1
        await self._changed(session_id, edited)
        await self._forgotten(principal.user_id)
        stream_id = await self._answer(
            assistant, principal, session_id, edited, chat.model, revision
        )
        return VersionChange(edited, stream_id)

    async def select(
        self, principal: Principal, session_id: uuid.UUID, message_id: uuid.UUID, version: object
    ) -> VersionChange:
        """Show ``version`` of the message. Switching a question also shows the newest
        answer to that version of it, when there is one."""
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise BadRequest("version must be a positive integer", details={"field": "version"})
        changed: list[dict[str, Any]] = []
        exchange: tuple[Message | None, Message | None] = (None, None)
        async with self._db.transaction() as session:
            _, message = await self._target(session, principal, session_id, message_id)
            before = message.version
            if not await versions_repo.select_version(session, message, version):
                raise NotFound("no such version of this message")
            shown = message_to_wire(message)
            if message.version != before:
                changed.append(shown)
            if message.role == "user" and message.version != before:
                answer = await messages_repo.find_answer(session, session_id, message.id)
                if answer is not None:
                    match = await versions_repo.latest_answering(session, answer.id, version)
                    if match is not None and match != answer.version:
                        await versions_repo.select_version(session, answer, match)
                        changed.append(message_to_wire(answer))
                exchange = (message, answer)
            elif message.role == "assistant" and message.version != before and message.reply_to:
                question = await messages_repo.get_message(session, session_id, message.reply_to)
                exchange = (question, message)
            question, answer = exchange
            asked = message_to_wire(question) if question is not None else None
            answered = message_to_wire(answer) if answer is not None else None
        for wire in changed:
            await self._changed(session_id, wire)
        if asked is not None:
            await self._forgotten(uuid.UUID(asked["user_id"]) if asked["user_id"] else None)
            if answered is not None and not asked["deleted"]:
                self._assistant.relearn(principal, session_id, asked, answered)
        return VersionChange(shown)

    async def versions(
        self, principal: Principal, session_id: uuid.UUID, message_id: uuid.UUID
    ) -> dict[str, Any]:
        """The message as shown and every version of it, oldest first."""
        async with self._db.read() as session:
            _, message = await self._target(session, principal, session_id, message_id)
            stored = await versions_repo.versions_of(session, message.id)
            wire = message_to_wire(message)
        listed = [version_to_wire(v) for v in stored] or [
            {
                key: wire[key]
                for key in ("version", "content", "model", "status", "created_at", "error")
                if key in wire
            }
        ]
        return {"message": wire, "versions": listed}

    # Helpers ------------------------------------------------------------------------

    def _require_assistant(self) -> Regenerator:
        return self._assistant

    async def _admit(self, principal: Principal, session_id: uuid.UUID) -> None:
        """What a new message is held to before anything is stored: the message quota,
        then the budget (``budget_exceeded`` with its reset time)."""
        if self._quota is not None:
            await self._quota(str(principal.user_id))
        if self._answer_gate is not None:
            await self._answer_gate(principal.user_id, session_id)

    async def _target(
        self, session: Any, principal: Principal, session_id: uuid.UUID, message_id: uuid.UUID
    ) -> tuple[Any, Message]:
        chat = await sessions_repo.get_session_for_member(session, session_id, principal.user_id)
        if chat is None:
            raise NotFound("session not found")
        message = await versions_repo.lock_message(session, session_id, message_id)
        if message is None or message.deleted_at is not None:
            raise NotFound("message not found")
        if chat.status == "closed":
            raise Conflict("the session is closed; restore it to write again")
        return chat, message

    async def _answer(
        self,
        assistant: Regenerator,
        principal: Principal,
        session_id: uuid.UUID,
        question: dict[str, Any],
        model: str | None,
        revision: int,
    ) -> str:
        # A regeneration is an answer like any other: it takes one of the user's
        # concurrent answers (``too_many_answers`` when none is free).
        slot = await assistant.reserve(principal)
        try:
            pending = assistant.prepare(
                principal,
                session_id,
                question,
                force_search=False,
                versioned=True,
                reply_version=question["version"],
                slot=slot,
            )
        except BaseException:
            assistant.release(principal, slot)
            raise
        stream_id = pending.confirm(question, model, revision)
        # The answers this one replaces stop (on whichever node runs them).
        await assistant.supersede(str(session_id), question["id"], stream_id)
        return stream_id

    async def _forgotten(self, user_id: uuid.UUID | None) -> None:
        if self._memory_forgotten is not None and user_id is not None:
            await self._memory_forgotten(user_id)

    async def _changed(self, session_id: uuid.UUID, message: dict[str, Any]) -> None:
        if self._history_changed is not None:
            self._history_changed(session_id)
        await self._fanout.publish_version(str(session_id), message)
