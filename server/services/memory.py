"""Per-user memory: what the assistant keeps about a user, and the prompt's view of it.

Two writers: the user through ``/v1/me/memory`` (source ``"user"``) and extraction
after a turn (``learn_from_turn`` → ``apply_changes``, source ``"learned"``). A
learned item never overwrites one the user wrote. A learned item remembers the
question it came from (``source_message_id``): when the version shown of that
question or of its answer changes, the item is deleted with the change
(``db.repositories.versions``) and the exchange now shown is learned from again
(memory follows the version shown). Every change invalidates the user's entry in the
context cache, so the next turn reads the table again; a cache that is down costs a
database read, never the request.
"""

from __future__ import annotations

import builtins
import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from db.engine import Database
from db.models import MemoryItem
from db.repositories import memories as memories_repo
from db.repositories import versions as versions_repo
from errors import BadRequest, NotFound, ParleyError, TooLarge
from memory.cache import DEFAULT_TTL_S, UserContextCache
from memory.extraction import KINDS, Complete, MemoryChanges, extract_memory
from memory.extraction import MemoryItem as KnownItem
from server.services.accounts import Principal
from server.services.sessions import parse_id

log = logging.getLogger(__name__)

SOURCES = ("user", "learned")

# Extraction costs a model call per turn, so it runs only when the user's message
# could carry something durable about them: it speaks of the user ("I", "my", "me"…)
# or gives a standing instruction ("always", "from now on", "call me"…). A question
# like "what is the capital of Peru?" has nothing to remember and is not sent.
_ABOUT_THE_USER = re.compile(
    r"\b(?:i|i'm|i've|i'd|i'll|me|my|mine|myself|we|our"
    r"|always|never|from\ now\ on|call\ me|remember|prefer\w*)\b",
    re.IGNORECASE,
)


def worth_learning(user_text: str) -> bool:
    """Whether a turn may hold a preference or a fact about the user (rule above)."""
    return bool(_ABOUT_THE_USER.search(user_text))


@dataclass(frozen=True, slots=True)
class LearnedFrom:
    """The exchange a turn's extraction reads: its question, and the ``(message id,
    version)`` of the question and the answer as they were shown then. What it learned
    is stored only if they are still shown (a newer version is learned from instead)."""

    question_id: uuid.UUID
    shown: tuple[tuple[uuid.UUID, int], ...] = ()


def memory_to_wire(item: MemoryItem) -> dict[str, Any]:
    return {
        "id": str(item.id),
        "kind": item.kind,
        "content": item.content,
        "source": item.source,
        "created_at": item.created_at.isoformat(),
    }


class MemoryService:
    def __init__(
        self,
        database: Database,
        cache: UserContextCache,
        *,
        max_chars: int,
        cache_ttl_s: int = DEFAULT_TTL_S,
    ) -> None:
        self._db = database
        self._cache = cache
        self._max_chars = max_chars
        self._cache_ttl_s = cache_ttl_s

    # REST: the user's own view.

    async def list(self, principal: Principal) -> list[dict[str, Any]]:
        async with self._db.read() as session:
            items = await memories_repo.list_for_user(session, principal.user_id)
        return [memory_to_wire(item) for item in items]

    async def add(self, principal: Principal, *, content: str, kind: str) -> dict[str, Any]:
        content = self._checked(content, kind)
        async with self._db.transaction() as session:
            item = await memories_repo.add(
                session, principal.user_id, kind=kind, content=content, source="user"
            )
        await self._invalidate(principal.user_id)
        return memory_to_wire(item)

    async def forget(self, principal: Principal, item_id: str) -> None:
        """Forget one item; another user's item is ``NotFound``, like a missing one."""
        parsed = parse_id(item_id, "memory item")
        async with self._db.transaction() as session:
            if not await memories_repo.delete_one(session, principal.user_id, parsed):
                raise NotFound("memory item not found")
        await self._invalidate(principal.user_id)

    async def forget_all(self, principal: Principal) -> int:
        async with self._db.transaction() as session:
            removed = await memories_repo.delete_all(session, principal.user_id)
        await self._invalidate(principal.user_id)
        return removed

    # The generation runner's view.

    async def known_items(self, user_id: uuid.UUID) -> builtins.list[KnownItem]:
        """Existing items for ``memory.extraction``; the user's own are not replaceable."""
        async with self._db.read() as session:
            items = await memories_repo.list_for_user(session, user_id)
        return [
            KnownItem(str(item.id), item.kind, item.content, replaceable=item.source == "learned")  # type: ignore[arg-type]
            for item in items
        ]

    async def apply_changes(
        self, user_id: uuid.UUID, changes: MemoryChanges, source: LearnedFrom | None = None
    ) -> int:
        """Store what extraction learned; returns how many items were added or replaced.

        Candidates that fail the same checks as a user's item are skipped, not raised:
        a model's bad guess must not fail the turn that produced it. With ``source``,
        nothing is stored once another version of its exchange is shown.
        """
        if not changes:
            return 0
        applied = 0
        source_id = source.question_id if source is not None else None
        async with self._db.transaction() as session:
            if source is not None and not await versions_repo.shows(session, list(source.shown)):
                return 0
            for candidate in changes.add:
                content = self._valid_or_none(candidate.content, candidate.kind)
                if content is not None:
                    await memories_repo.add(
                        session,
                        user_id,
                        kind=candidate.kind,
                        content=content,
                        source="learned",
                        source_message_id=source_id,
                    )
                    applied += 1
            for target, candidate in changes.replace:
                content = self._valid_or_none(candidate.content, candidate.kind)
                target_id = _uuid_or_none(target)
                if content is None or target_id is None:
                    continue
                if await memories_repo.replace(
                    session,
                    user_id,
                    target_id,
                    kind=candidate.kind,
                    content=content,
                    only_source="learned",
                    source_message_id=source_id,
                ):
                    applied += 1
        if applied:
            await self._invalidate(user_id)
        return applied

    async def learn_from_turn(
        self,
        user_id: uuid.UUID,
        user_text: str,
        assistant_text: str,
        *,
        model: str,
        complete: Complete,
        source: LearnedFrom | None = None,
    ) -> int:
        """Extract what a finished turn says about the user and store it as ``learned``.

        Runs off the hot path, after the answer went out; returns how many items
        changed. Never raises: a failed extraction logs and changes nothing, because
        nobody is waiting for it.
        """
        if not worth_learning(user_text):
            return 0
        try:
            existing = await self.known_items(user_id)
            changes = await extract_memory(
                complete,
                model=model,
                user_message=user_text,
                assistant_reply=assistant_text,
                existing=existing,
                max_chars=self._max_chars,
            )
            return await self.apply_changes(user_id, changes, source)
        except ParleyError as exc:
            log.warning("learning from a turn failed: %s", exc.message)
        except Exception:
            log.exception("learning from a turn failed")
        return 0

    async def context_items(self, user_id: uuid.UUID) -> builtins.list[str]:
        """The lines the prompt shows about the user, oldest first; cached per user."""
        key = str(user_id)
        try:
            cached = await self._cache.get(key)
            if cached is not None:
                return [str(line) for line in orjson.loads(cached)]
        except (ParleyError, orjson.JSONDecodeError, TypeError) as exc:
            log.warning("user context cache read failed: %s", exc)
        async with self._db.read() as session:
            items = await memories_repo.list_for_user(session, user_id)
        lines = [f"({item.kind}) {item.content}" for item in items]
        try:
            await self._cache.set(key, orjson.dumps(lines), self._cache_ttl_s)
        except ParleyError as exc:
            log.warning("user context cache write failed: %s", exc.message)
        return lines

    def _checked(self, content: str, kind: str) -> str:
        if kind not in KINDS:
            raise BadRequest("kind must be 'preference' or 'fact'")
        content = " ".join(content.split())
        if not content:
            raise BadRequest("content must not be empty")
        if len(content) > self._max_chars:
            raise TooLarge(f"content is longer than {self._max_chars} characters")
        return content

    def _valid_or_none(self, content: str, kind: str) -> str | None:
        try:
            return self._checked(content, kind)
        except ParleyError:
            return None

    async def forgotten(self, user_id: uuid.UUID) -> None:
        """A version change deleted items learned for ``user_id`` (in its own
        transaction): the prompt's cached view of them goes too."""
        await self._invalidate(user_id)

    async def _invalidate(self, user_id: uuid.UUID) -> None:
        try:
            await self._cache.invalidate(str(user_id))
        except ParleyError as exc:
            # The entry's TTL bounds how long the stale view can last.
            log.warning("user context cache invalidation failed: %s", exc.message)


def _uuid_or_none(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except (ValueError, TypeError):
        return None
