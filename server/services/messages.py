"""Posting a message: validate, store with the next ``seq``, fan out, ask the assistant.

The same rules serve the WebSocket ``message`` frame and ``POST …/messages``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from sqlalchemy.exc import IntegrityError

from db.engine import Database
from db.repositories import messages as messages_repo
from db.repositories import sessions as sessions_repo
from server.errors import BadRequest, Conflict, NotFound
from server.services.accounts import Principal
from server.services.wire import message_to_wire

ReplyMode = Literal["auto", "none"]
MAX_CLIENT_MSG_ID = 128


class MessageFanout(Protocol):
    async def message_stored(self, session_id: str, message: dict[str, Any]) -> None: ...


class AssistantTrigger(Protocol):
    async def reply(
        self,
        principal: Principal,
        session_id: uuid.UUID,
        user_message: dict[str, Any],
        *,
        force_search: bool,
        model: str | None = None,
    ) -> str | None: ...


@dataclass(frozen=True)
class PostedMessage:
    message: dict[str, Any]
    created: bool
    stream_id: str | None = None


class MessageService:
    def __init__(self, database: Database, *, max_content_chars: int) -> None:
        self._db = database
        self.max_content_chars = max_content_chars
        self.fanout: MessageFanout | None = None
        self.assistant: AssistantTrigger | None = None

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
        stored, created, model = await self._store(principal, session_id, text, idempotency_key)
        if not created:
            return PostedMessage(stored, created=False)
        if self.fanout is not None:
            await self.fanout.message_stored(str(session_id), stored)
        stream_id = None
        if reply_mode == "auto" and self.assistant is not None:
            # The session row was just read: its model saves the generation a round trip
            # before the upstream request.
            stream_id = await self.assistant.reply(
                principal, session_id, stored, force_search=force_search, model=model
            )
        return PostedMessage(stored, created=True, stream_id=stream_id)

    async def _store(
        self, principal: Principal, session_id: uuid.UUID, text: str, client_msg_id: str | None
    ) -> tuple[dict[str, Any], bool, str | None]:
        """The stored message, whether it is new, and the session's model (if set)."""
        try:
            async with self._db.transaction() as session:
                chat = await sessions_repo.get_session_for_member(
                    session, session_id, principal.user_id
                )
                if chat is None:
                    raise NotFound("session not found")
                if chat.status == "closed":
                    raise Conflict("the session is closed; restore it to write again")
                if client_msg_id is not None:
                    existing = await messages_repo.find_by_client_msg_id(
                        session, session_id, client_msg_id
                    )
                    if existing is not None:
                        return _replayed(existing, text), False, chat.model
                if chat.status == "expired":
                    await sessions_repo.update_session(session, chat.id, status="active")
                message = await messages_repo.append_message(
                    session,
                    session_id=session_id,
                    role="user",
                    user_id=principal.user_id,
                    content=text,
                    client_msg_id=client_msg_id,
                )
                return message_to_wire(message), True, chat.model
        except IntegrityError:
            if client_msg_id is None:
                raise
            # Two copies of one retry raced; the other stored it first.
            async with self._db.transaction() as session:
                existing = await messages_repo.find_by_client_msg_id(
                    session, session_id, client_msg_id
                )
            if existing is None:
                raise
            return _replayed(existing, text), False, None


def _replayed(existing: Any, text: str) -> dict[str, Any]:
    if existing.content != text:
        raise Conflict("client_msg_id was already used with different content")
    return message_to_wire(existing)
