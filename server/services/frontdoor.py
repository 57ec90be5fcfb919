"""The OpenAI-compatible front door's rules: which room a request is a turn in, and
how the caller's ``messages`` meet the room's stored history.

The room's history is authoritative: the model is given what the room holds (its
summary, memory, documents and messages), not the caller's copy. Of the caller's
``messages`` only the last one, a user turn, is new; it is stored once. Its
``client_msg_id`` is derived from the whole conversation up to it (roles, contents,
positions), or from an ``Idempotency-Key`` header, so an identical retry finds the
stored turn instead of asking again.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from errors import BadRequest, NotFound
from server.config import Settings
from server.services.accounts import Principal
from server.services.sessions import SessionService

# The model name that means "whatever the room is set to": for a client that must
# name one (every OpenAI client does) and an operator who lets rooms choose.
ROOM_MODEL = "parley"
SESSION_HEADER = "x-parley-session"
TITLE_CHARS = 60
MAX_SYSTEM_PROMPT = 8000


class ChatMessageIn(BaseModel):
    """One message of an OpenAI chat request. Lenient (``extra="allow"``): clients
    send fields (``name``, ``tool_calls``…) that the room has no use for."""

    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, object]] | None = None


class ChatCompletionBody(BaseModel):
    """``POST /v1/chat/completions``, as OpenAI's clients send it. Sampling fields
    (temperature, top_p…) are accepted and left to the room's settings."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=200)
    messages: list[ChatMessageIn] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, object] | None = None
    user: str | None = Field(default=None, max_length=256)
    metadata: dict[str, str] | None = None


@dataclass(frozen=True)
class FrontDoorTurn:
    session_id: uuid.UUID
    session_created: bool
    content: str
    client_msg_id: str
    stream: bool
    include_usage: bool


class FrontDoor:
    def __init__(self, sessions: SessionService, settings: Settings) -> None:
        self._sessions = sessions
        self._settings = settings

    def models(self) -> list[str]:
        """What the operator allows (``LLM_MODELS``), and the room's own choice."""
        return [*self._settings.allowed_models, ROOM_MODEL]

    async def turn(
        self,
        principal: Principal,
        body: ChatCompletionBody,
        *,
        session_header: str | None,
        idempotency_key: str | None,
    ) -> FrontDoorTurn:
        if body.model not in self.models():
            raise NotFound(
                f"The model '{body.model[:200]}' does not exist or is not offered here",
                details={"field": "model", "code": "model_not_found"},
            )
        last = body.messages[-1]
        if last.role != "user":
            raise BadRequest(
                "the last message must be the user's turn",
                details={"field": "messages", "code": "invalid_messages"},
            )
        content = text_of(last)
        if not content.strip():
            raise BadRequest(
                "the last user message has no text",
                details={"field": "messages", "code": "invalid_messages"},
            )
        named = session_header or (body.metadata or {}).get("session_id") or _as_uuid(body.user)
        created = False
        if named:
            try:
                session_id = uuid.UUID(str(named).strip())
            except ValueError:
                raise NotFound(
                    "session not found", details={"field": "session", "code": "session_not_found"}
                ) from None
        else:
            session = await self._sessions.create(
                principal,
                title=" ".join(content.split())[:TITLE_CHARS],
                model=None if body.model == ROOM_MODEL else body.model,
                system_prompt=_system_prompt(body.messages),
            )
            session_id, created = uuid.UUID(session["id"]), True
        options = body.stream_options or {}
        return FrontDoorTurn(
            session_id=session_id,
            session_created=created,
            content=content,
            client_msg_id=client_msg_id(body.messages, idempotency_key),
            stream=body.stream,
            include_usage=bool(options.get("include_usage")),
        )


def text_of(message: ChatMessageIn) -> str:
    """A message's text: the string, or its ``text`` parts joined (images and other
    parts have no place in a room's text history)."""
    if isinstance(message.content, str):
        return message.content
    parts = message.content or []
    return "".join(str(p.get("text", "")) for p in parts if p.get("type") == "text")


def client_msg_id(messages: list[ChatMessageIn], idempotency_key: str | None) -> str:
    """The stored turn's idempotency key: the caller's, or the conversation's hash."""
    if idempotency_key:
        digest = hashlib.sha256(b"key\0" + idempotency_key.encode()).hexdigest()
    else:
        conversation: list[Any] = [(m.role, text_of(m)) for m in messages]
        digest = hashlib.sha256(orjson.dumps(conversation)).hexdigest()
    return "oai-" + digest[:48]


def _system_prompt(messages: list[ChatMessageIn]) -> str | None:
    """A new room takes the caller's system messages as its prompt."""
    text = "\n\n".join(text_of(m) for m in messages if m.role in ("system", "developer"))
    return text[:MAX_SYSTEM_PROMPT] or None


def _as_uuid(value: str | None) -> str | None:
    """OpenAI's ``user`` field names a session only when it is a session id."""
    if not value:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return None
