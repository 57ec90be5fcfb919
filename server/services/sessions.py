"""Sessions: the rules for who may see and change a chat room, and its lifecycle.

Lifecycle: ``active`` → (30 min without activity, nobody present) → ``expired``;
the owner may ``close`` it at any time. Activity (a join, a message) brings an expired
session back by itself; a closed one comes back only through ``restore``. History
and summary survive every state.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

from db.engine import Database
from db.models import ChatSession
from db.repositories import audit as audit_repo
from db.repositories import invitations as invitations_repo
from db.repositories import messages as messages_repo
from db.repositories import sessions as sessions_repo
from db.repositories import users as users_repo
from db.types import utcnow
from errors import BadRequest, Conflict, Forbidden, NotFound
from server.services.accounts import Principal, normalise_email
from server.services.wire import message_to_wire, session_to_wire, summary_to_wire

STATUSES = ("active", "expired", "closed")
# One answer to an invitation by email, whether or not the address has an account.
INVITED_MESSAGE = "if this address has an account, it was invited; it joins by accepting"
MAX_PAGE = 200
DEFAULT_PAGE = 50

OccupiedRooms = Callable[[list[str]], Awaitable[set[str]]]


def parse_id(value: str, what: str = "session") -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        # An id that cannot exist is simply not found: the same answer as any other.
        raise NotFound(f"{what} not found") from None


async def _audit(
    session: Any, actor_id: uuid.UUID, action: str, session_id: uuid.UUID, details: dict[str, Any]
) -> None:
    """One audit row for something done to a session."""
    await audit_repo.record(
        session,
        actor_id=actor_id,
        action=action,
        target_type="session",
        target_id=str(session_id),
        session_id=session_id,
        details=details,
    )


class SessionService:
    def __init__(
        self,
        database: Database,
        *,
        idle_expiry_s: int,
        allowed_models: Sequence[str] | None = None,
        access_changed: Callable[[uuid.UUID], None] | None = None,
    ) -> None:
        self._db = database
        self._idle_expiry = timedelta(seconds=idle_expiry_s)
        # The operator's allow-list (``LLM_MODELS``); None allows any (benchmarks).
        self._allowed_models = frozenset(allowed_models) if allowed_models is not None else None
        # Told when a session closes or loses a member here, so that this node's copy
        # of its turns does not start an answer that the store will refuse.
        self.access_changed = access_changed

    async def create(
        self, principal: Principal, *, title: str, model: str | None, system_prompt: str | None
    ) -> dict[str, Any]:
        self._check_model(model)
        async with self._db.transaction() as session:
            chat = await sessions_repo.create_session(
                session,
                owner_id=principal.user_id,
                title=title,
                model=model,
                system_prompt=system_prompt,
            )
        return session_to_wire(chat)

    def _check_model(self, model: str | None) -> None:
        """A session's model is sent upstream and billed: only the operator's choices.
        The refused name is not echoed back (it is the caller's own input anyway)."""
        if model is None or self._allowed_models is None or model in self._allowed_models:
            return
        allowed = sorted(self._allowed_models)
        message = "model is not one this server offers: " + ", ".join(allowed)
        raise BadRequest(message, details=[{"field": "model", "problem": message}])

    async def list_for(
        self, principal: Principal, status: str, limit: int = 200
    ) -> list[dict[str, Any]]:
        if status not in (*STATUSES, "open", "all"):
            raise BadRequest("status must be open, active, expired, closed or all")
        statuses = {"all": None, "open": ["active", "expired"]}.get(status, [status])
        async with self._db.transaction() as session:
            chats = await sessions_repo.list_sessions_for_user(
                session, principal.user_id, statuses, limit
            )
        return [session_to_wire(chat) for chat in chats]

    async def require_member(self, principal: Principal, session_id: uuid.UUID) -> ChatSession:
        async with self._db.transaction() as session:
            chat = await sessions_repo.get_session_for_member(
                session, session_id, principal.user_id
            )
        if chat is None:
            raise NotFound("session not found")
        return chat

    async def get(self, principal: Principal, session_id: uuid.UUID) -> dict[str, Any]:
        chat = await self.require_member(principal, session_id)
        async with self._db.transaction() as session:
            members = await sessions_repo.list_members(session, session_id)
        body = session_to_wire(chat)
        body["members"] = [
            {"user_id": str(user.id), "name": user.name, "role": member.role}
            for member, user in members
        ]
        return body

    async def update(
        self, principal: Principal, session_id: uuid.UUID, changes: dict[str, Any]
    ) -> dict[str, Any]:
        self._check_model(changes.get("model"))
        chat = await self._require_owner(principal, session_id)
        async with self._db.transaction() as session:
            updated = await sessions_repo.update_session(session, chat.id, **changes)
        assert updated is not None
        return session_to_wire(updated)

    async def close(self, principal: Principal, session_id: uuid.UUID) -> dict[str, Any]:
        chat = await self._require_owner(principal, session_id)
        async with self._db.transaction() as session:
            updated = await sessions_repo.update_session(
                session, chat.id, status="closed", closed_at=utcnow()
            )
        assert updated is not None
        if self.access_changed is not None:
            self.access_changed(chat.id)
        return session_to_wire(updated)

    async def restore(self, principal: Principal, session_id: uuid.UUID) -> dict[str, Any]:
        """Bring a session back; the answer carries its summary and latest history page."""
        chat = await self.require_member(principal, session_id)
        if chat.status == "closed" and chat.owner_id != principal.user_id:
            raise Forbidden("only the owner can reopen a closed session")
        async with self._db.transaction() as session:
            updated = await sessions_repo.update_session(
                session, chat.id, status="active", closed_at=None, last_activity_at=utcnow()
            )
            summary = await messages_repo.latest_summary(session, chat.id)
            recent = await messages_repo.page_before(session, chat.id, None, DEFAULT_PAGE)
        assert updated is not None
        body = session_to_wire(updated)
        body["summary"] = summary_to_wire(summary)
        body["messages"] = [message_to_wire(m) for m in recent]
        return body

    async def add_member(
        self,
        principal: Principal,
        session_id: uuid.UUID,
        *,
        user_id: uuid.UUID | None = None,
        email: str | None = None,
    ) -> dict[str, Any]:
        await self._require_owner(principal, session_id)
        async with self._db.transaction() as session:
            if user_id is not None:
                user = await users_repo.get_user(session, user_id)
            else:
                user = await users_repo.get_user_by_email(session, (email or "").strip().lower())
            if user is None:
                raise NotFound("user not found")
            await sessions_repo.add_member(session, session_id, user.id)
            await _audit(
                session, principal.user_id, "member.add", session_id, {"user_id": str(user.id)}
            )
        return {"user_id": str(user.id), "name": user.name, "role": "member"}

    async def invite(
        self, principal: Principal, session_id: uuid.UUID, email: str
    ) -> dict[str, Any]:
        """Invite the account behind ``email``; it becomes a member only by accepting.
        The answer is the same whether the address has an account, is a member or
        invited already, so it tells the owner nothing about who is registered."""
        await self._require_owner(principal, session_id)
        address = normalise_email(email)
        async with self._db.transaction() as session:
            user = await users_repo.get_user_by_email(session, address)
            invited = (
                user is not None
                and user.id != principal.user_id
                and await invitations_repo.invite(session, session_id, user.id, principal.user_id)
            )
            if invited:
                assert user is not None
                await _audit(
                    session,
                    principal.user_id,
                    "member.invite",
                    session_id,
                    {"user_id": str(user.id)},
                )
        return {"status": "invited", "email": address, "message": INVITED_MESSAGE}

    async def invitations(self, principal: Principal) -> list[dict[str, Any]]:
        async with self._db.read() as session:
            return await invitations_repo.list_for_invitee(session, principal.user_id)

    async def answer_invitation(
        self, principal: Principal, invitation_id: uuid.UUID, *, accept: bool
    ) -> dict[str, Any]:
        async with self._db.transaction() as session:
            invitation = await invitations_repo.take(session, invitation_id, principal.user_id)
            if invitation is None:
                raise NotFound("invitation not found")
            session_id = invitation.session_id
            if accept and not await sessions_repo.is_member(session, session_id, principal.user_id):
                await sessions_repo.add_member(session, session_id, principal.user_id)
                await _audit(
                    session,
                    principal.user_id,
                    "member.add",
                    session_id,
                    {
                        "user_id": str(principal.user_id),
                        "invited_by": str(invitation.inviter_id),
                    },
                )
        if not accept:
            return {"invitation_id": str(invitation_id), "declined": True}
        return {
            "session_id": str(session_id),
            "user_id": str(principal.user_id),
            "name": principal.name,
            "role": "member",
        }

    async def remove_member(
        self, principal: Principal, session_id: uuid.UUID, user_id: uuid.UUID
    ) -> str | None:
        """Removes a member; returns their name, for the room's ``member`` frame."""
        chat = await self._require_owner(principal, session_id)
        if user_id == chat.owner_id:
            raise Conflict("the owner cannot be removed from their session")
        async with self._db.transaction() as session:
            if not await sessions_repo.remove_member(session, session_id, user_id):
                raise NotFound("member not found")
            removed = await users_repo.get_user(session, user_id)
            await _audit(
                session, principal.user_id, "member.remove", session_id, {"user_id": str(user_id)}
            )
        if self.access_changed is not None:
            self.access_changed(session_id)
        return removed.name if removed is not None else None

    async def history(
        self,
        principal: Principal,
        session_id: uuid.UUID,
        *,
        before_seq: int | None,
        after_seq: int | None,
        limit: int,
    ) -> dict[str, Any]:
        if before_seq is not None and after_seq is not None:
            raise BadRequest("give before_seq or after_seq, not both")
        if not 1 <= limit <= MAX_PAGE:
            raise BadRequest(f"limit must be between 1 and {MAX_PAGE}")
        # The hottest REST read (clients page history on every restore): the access
        # check rides in the page's own query; only an empty page needs a second look.
        async with self._db.read() as session:
            page = await messages_repo.member_page(
                session,
                session_id,
                principal.user_id,
                before_seq=before_seq,
                after_seq=after_seq,
                limit=limit,
            )
            if not page and not await sessions_repo.is_member(
                session, session_id, principal.user_id
            ):
                raise NotFound("session not found")
        first_seq = page[0].seq if page else None
        return {
            "messages": [message_to_wire(m) for m in page],
            "next_before_seq": first_seq if first_seq is not None and first_seq > 1 else None,
        }

    async def delete_message(
        self, principal: Principal, session_id: uuid.UUID, message_id: uuid.UUID
    ) -> dict[str, Any]:
        chat = await self.require_member(principal, session_id)
        async with self._db.transaction() as session:
            message = await messages_repo.get_message(session, session_id, message_id)
            if message is None:
                raise NotFound("message not found")
            allowed = (
                message.user_id == principal.user_id
                or chat.owner_id == principal.user_id
                or principal.is_admin
            )
            if not allowed:
                raise Forbidden("only the author, the session owner or an admin may delete it")
            if message.deleted_at is None:
                await messages_repo.soft_delete(session, message, principal.user_id, utcnow())
                await audit_repo.record(
                    session,
                    actor_id=principal.user_id,
                    action="message.delete",
                    target_type="message",
                    target_id=str(message.id),
                    session_id=session_id,
                    details={"seq": message.seq, "author_id": str(message.user_id)},
                )
        return message_to_wire(message)

    async def join_state(
        self,
        session_id: uuid.UUID,
        since_seq: int | None,
        replay_limit: int,
        replay_max_chars: int | None = None,
    ) -> tuple[int, list[dict[str, Any]] | None, bool]:
        """Where the room stands for a joiner: ``(last_seq, history, recovered)``.

        ``history`` is at most ``replay_limit`` messages and, past the first, at most
        ``replay_max_chars`` of content, oldest first; ``recovered`` is false when more
        remain, which the client pages with ``after_seq`` = the last one's seq.

        Joining is activity: an expired session becomes active again.
        """
        async with self._db.transaction() as session:
            await sessions_repo.touch_sessions(session, [session_id], utcnow())
            chat = await sessions_repo.get_session(session, session_id)
            if chat is None:
                raise NotFound("session not found")
            if since_seq is None:
                return chat.last_seq, None, True
            page = await messages_repo.page_after(session, session_id, since_seq, replay_limit)
        if replay_max_chars is not None:
            page = _within_chars(page, replay_max_chars)
        recovered = not page or page[-1].seq >= chat.last_seq
        return chat.last_seq, [message_to_wire(m) for m in page], recovered

    async def messages_after(
        self, session_id: str, after_seq: int, limit: int
    ) -> list[dict[str, Any]]:
        """Messages after ``after_seq``, for a node catching a room up (no access check)."""
        async with self._db.transaction() as session:
            page = await messages_repo.page_after(session, uuid.UUID(session_id), after_seq, limit)
        return [message_to_wire(m) for m in page]

    async def expire_idle(self, occupied: OccupiedRooms) -> int:
        """Expire sessions idle for the configured time that nobody is present in."""
        cutoff = utcnow() - self._idle_expiry
        async with self._db.transaction() as session:
            candidates = await sessions_repo.idle_session_ids(session, cutoff)
        if not candidates:
            return 0
        present = await occupied([str(c) for c in candidates])
        idle = [c for c in candidates if str(c) not in present]
        async with self._db.transaction() as session:
            if present:
                # Someone is in the room: that is activity, even if nobody typed.
                await sessions_repo.touch_sessions(
                    session, [uuid.UUID(p) for p in present], utcnow()
                )
            return await sessions_repo.expire_sessions(session, idle, cutoff)

    async def touch(self, session_ids: Sequence[uuid.UUID]) -> None:
        async with self._db.transaction() as session:
            await sessions_repo.touch_sessions(session, session_ids, utcnow())

    async def _require_owner(self, principal: Principal, session_id: uuid.UUID) -> ChatSession:
        chat = await self.require_member(principal, session_id)
        if chat.owner_id != principal.user_id and not principal.is_admin:
            raise Forbidden("only the session owner may do this")
        return chat


def _within_chars(page: list[Any], max_chars: int) -> list[Any]:
    """The head of ``page`` whose contents add up to at most ``max_chars`` (at least one
    message, so that a replay always moves forward)."""
    total = 0
    for count, message in enumerate(page):
        total += len(message.content or "")
        if count and total > max_chars:
            return page[:count]
    return page
