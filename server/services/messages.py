"""Posting a message: validate, store with the next ``seq``, fan out, ask the assistant.

The same rules serve the WebSocket ``message`` frame and ``POST …/messages``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from db.engine import Database
from db.repositories import messages as messages_repo
from db.repositories import sessions as sessions_repo
from db.repositories.message_batches import BatchItem
from errors import BadRequest, ClientMsgIdTaken, Conflict, NotFound
from server.assistant.turn_cache import TurnCache, turn_of
from server.services.accounts import Principal
from server.services.message_commits import RoomCommits, Stored
from server.services.wire import message_to_wire

log = logging.getLogger("parley.messages")

ReplyMode = Literal["auto", "none"]
MAX_CLIENT_MSG_ID = 128


class MessageFanout(Protocol):
    async def message_stored(self, session_id: str, message: dict[str, Any]) -> None: ...


class PendingAnswer(Protocol):
    async def request_on_its_way(self) -> None: ...

    def confirm(self, stored: dict[str, Any], model: str | None, revision: int) -> str: ...

    def abandon(self) -> None: ...


class AssistantTrigger(Protocol):
    def prepare(
        self,
        principal: Principal,
        session_id: uuid.UUID,
        question: dict[str, Any],
        *,
        force_search: bool,
        slot: str | None = None,
    ) -> PendingAnswer: ...


@dataclass(frozen=True)
class PostedMessage:
    message: dict[str, Any]
    created: bool
    stream_id: str | None = None


class MessageService:
    def __init__(
        self,
        database: Database,
        *,
        max_content_chars: int,
        quota: Callable[[str], Awaitable[None]] | None = None,
        fanout: MessageFanout | None = None,
        assistant: AssistantTrigger | None = None,
        turns: TurnCache | None = None,
        answer_gate: Callable[[uuid.UUID, uuid.UUID], Awaitable[None]] | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._db = database
        self.max_content_chars = max_content_chars
        # The per-user message quota (raises RateLimited), charged here so that every
        # way in (WebSocket, REST, REST with SSE) spends the one quota.
        self._quota = quota
        self.fanout = fanout
        self.assistant = assistant
        # Refuses a question that asks for an answer the user cannot pay for
        # (``BudgetExceeded``), before it is stored or any model is asked.
        self._answer_gate = answer_gate
        # The assistant's copy of recent turns, told of every message stored here.
        self.turns = turns
        self._landing: set[asyncio.Future[PostedMessage]] = set()
        self.commits = RoomCommits(
            database,
            store_one=self._store_alone,
            explain=self._explain_refusal,
            to_wire=message_to_wire,
            replay=_replayed,
            on_batch=on_batch,
        )

    def validate(
        self, content: object, client_msg_id: object, reply: object, search: object
    ) -> tuple[str, str | None, ReplyMode, bool]:
        if not isinstance(content, str) or not content.strip():
            raise BadRequest("content must be a non-empty string", details={"field": "content"})
        if len(content) > self.max_content_chars:
            raise BadRequest(
                f"content is longer than {self.max_content_chars} characters",
                details={"field": "content", "max": self.max_content_chars},
            )
        if client_msg_id is not None and (
            not isinstance(client_msg_id, str) or not 1 <= len(client_msg_id) <= MAX_CLIENT_MSG_ID
        ):
            raise BadRequest(
                f"client_msg_id must be a string of 1..{MAX_CLIENT_MSG_ID} characters",
                details={"field": "client_msg_id"},
            )
        if reply is None:
            reply = "auto"
        if reply not in ("auto", "none"):
            raise BadRequest('reply must be "auto" or "none"', details={"field": "reply"})
        if search is None:
            search = False
        if not isinstance(search, bool):
            raise BadRequest("search must be a boolean", details={"field": "search"})
        return content, client_msg_id, reply, search  # type: ignore[return-value]

    async def post(
        self,
        principal: Principal,
        session_id: uuid.UUID,
        *,
        content: object,
        client_msg_id: object = None,
        reply: object = None,
        search: object = None,
    ) -> PostedMessage:
        text, idempotency_key, reply_mode, force_search = self.validate(
            content, client_msg_id, reply, search
        )
        if self._quota is not None:
            await self._quota(str(principal.user_id))
        message_id = uuid.uuid4()
        answer = None
        if reply_mode == "auto" and self.assistant is not None:
            if self._answer_gate is not None:
                await self._answer_gate(principal.user_id, session_id)
            # The assistant reads the context and asks the model while the question is
            # stored, so the store does not sit in front of the first token.
            question = {
                "id": str(message_id),
                "session_id": str(session_id),
                "seq": None,
                "role": "user",
                "user_id": str(principal.user_id),
                "content": text,
                "client_msg_id": idempotency_key,
            }
            # One of the user's concurrent answers (``too_many_answers`` when none is
            # free), taken before anything is stored.
            reserve = getattr(self.assistant, "reserve", None)
            slot = await reserve(principal) if reserve is not None else None
            try:
                answer = self.assistant.prepare(
                    principal, session_id, question, force_search=force_search, slot=slot
                )
            except BaseException:
                getattr(self.assistant, "release", lambda *_: None)(principal, slot)
                raise
        if answer is not None and self._db.in_process:
            # The upstream is the longer wait of the two: its request leaves first.
            # A store that runs in this process (SQLite) would delay the request;
            # one that is a round trip to a database server is best started at
            # once beside it (on PostgreSQL, waiting measured no better).
            try:
                await answer.request_on_its_way()
            except BaseException:
                answer.abandon()  # cancelled before the store began: nothing to answer
                raise
        # From the store on, the post runs to its end in a task of its own: a caller
        # cancelled meanwhile (a dropped connection, a shutdown) must not leave a
        # stored question unseen by the room and unanswered.
        landing = asyncio.ensure_future(
            self._land(principal, session_id, text, idempotency_key, message_id, answer)
        )
        self._landing.add(landing)
        landing.add_done_callback(self._landed)
        return await asyncio.shield(landing)

    async def answer_to(
        self, session_id: uuid.UUID, question_id: uuid.UUID
    ) -> dict[str, Any] | None:
        """The stored answer to a question (for a retry that comes after it ended)."""
        async with self._db.read() as session:
            answer = await messages_repo.find_answer(session, session_id, question_id)
        return message_to_wire(answer) if answer is not None else None

    async def landed(self, timeout_s: float) -> None:
        """Wait (up to ``timeout_s``) for posts whose callers were cancelled to finish
        storing and fanning out."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self._landing:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                log.warning("%d posts still storing at shutdown", len(self._landing))
                return
            await asyncio.wait(list(self._landing), timeout=left)

    def _landed(self, landing: asyncio.Future[PostedMessage]) -> None:
        self._landing.discard(landing)
        if not landing.cancelled():
            landing.exception()  # retrieved: a caller that left cannot take it

    async def _land(
        self,
        principal: Principal,
        session_id: uuid.UUID,
        text: str,
        idempotency_key: str | None,
        message_id: uuid.UUID,
        answer: PendingAnswer | None,
    ) -> PostedMessage:
        try:
            stored, created, model, revision = await self._store(
                principal, session_id, text, idempotency_key, message_id
            )
        except BaseException:
            if answer is not None:
                answer.abandon()
            if self.turns is not None:
                # Refused (closed, or no longer a member): the next message reads the
                # database before it asks the model, instead of this node's copy.
                self.turns.drop(session_id)
            raise
        if not created:
            if answer is not None:
                answer.abandon()
            return PostedMessage(stored, created=False)
        if self.turns is not None:
            self.turns.appended(session_id, turn_of(stored), revision, principal.user_id)
        stream_id = None
        try:
            if self.fanout is not None:
                await self.fanout.message_stored(str(session_id), stored)
        finally:
            # Stored is stored: even if the fan-out failed, the question is answered;
            # members recover the message itself through seq.
            if answer is not None:
                stream_id = answer.confirm(stored, model, revision)
        return PostedMessage(stored, created=True, stream_id=stream_id)

    async def _store(
        self,
        principal: Principal,
        session_id: uuid.UUID,
        text: str,
        client_msg_id: str | None,
        message_id: uuid.UUID,
    ) -> Stored:
        """The stored message, whether it is new, the session's model (if set) and its
        history revision (``ChatSession.history_revision``; 0 for a replay). Goes with
        the room's other messages queued on this node as one commit
        (``server/services/message_commits.py``)."""
        item = BatchItem(message_id, principal.user_id, text, client_msg_id)
        return await self.commits.store(session_id, item)

    async def _store_alone(self, item: BatchItem, session_id: uuid.UUID) -> Stored:
        """One message as its own unit of work: a lone message of an idle room, or each
        of a batch whose transaction failed."""
        try:
            # One statement on PostgreSQL (``append_member_message``); the reads after
            # it only explain a refusal.
            async with self._db.single_statement() as session:
                appended = await messages_repo.append_member_message(
                    session,
                    session_id=session_id,
                    user_id=item.user_id,
                    content=item.content,
                    client_msg_id=item.client_msg_id,
                    message_id=item.message_id,
                )
                if appended is None:
                    raise await _refusal(session, session_id, item.user_id)
                wire = message_to_wire(appended.message)
                return wire, True, appended.session_model, appended.history_revision
        except ClientMsgIdTaken:
            assert item.client_msg_id is not None
            # A retry: this client_msg_id is stored already (perhaps by a racing copy).
            async with self._db.transaction() as session:
                existing = await messages_repo.find_by_client_msg_id(
                    session, session_id, item.client_msg_id
                )
            if existing is None:
                raise
            return _replayed(existing, item.content), False, None, 0

    async def _explain_refusal(self, session_id: uuid.UUID, user_id: uuid.UUID) -> BaseException:
        async with self._db.read() as session:
            return await _refusal(session, session_id, user_id)


async def _refusal(session: Any, session_id: uuid.UUID, user_id: uuid.UUID) -> BaseException:
    """Why a member's message was not stored: not a member (or no such session), or
    the session is closed."""
    chat = await sessions_repo.get_session_for_member(session, session_id, user_id)
    if chat is None:
        return NotFound("session not found")
    return Conflict("the session is closed; restore it to write again")


def _replayed(existing: Any, text: str) -> dict[str, Any]:
    if existing.content != text:
        raise Conflict("client_msg_id was already used with different content")
    return message_to_wire(existing)
