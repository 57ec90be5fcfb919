"""Accounts: registration, login with throttling, refresh rotation with reuse detection,
logout, and turning a credential into a ``Principal``."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from db.engine import Database
from db.models import User
from db.repositories import users as users_repo
from db.types import utcnow
from server.errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from server.ratelimit import Limit, RateLimiter
from server.security.callers import CallerCache
from server.security.passwords import hash_password, verify_password
from server.security.tickets import TicketStore
from server.security.tokens import (
    Claims,
    TokenService,
    hash_refresh_token,
    issued_at_ms,
    new_refresh_token,
)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the checked identity behind a request or a connection."""

    user_id: uuid.UUID
    name: str
    role: str
    expires_at: datetime | None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True)
class LoginResult:
    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int
    user: User


# Tells the other nodes that a user's caller row changed (see ``caller_changed``).
CallerChanged = Callable[[uuid.UUID], Awaitable[None]]


def user_to_wire(user: User) -> dict[str, Any]:
    return {
        "id": str(user.id),
        "email": user.email,
        "name": user.name,
        "role": user.role,
        "created_at": user.created_at.isoformat(),
    }


class AccountService:
    def __init__(
        self,
        database: Database,
        tokens: TokenService,
        tickets: TicketStore,
        limiter: RateLimiter,
        *,
        refresh_ttl_s: int,
        ticket_ttl_s: int,
        login_limit: Limit,
        callers: CallerCache | None = None,
    ) -> None:
        self._db = database
        self.tokens = tokens
        self._tickets = tickets
        self._limiter = limiter
        self._refresh_ttl_s = refresh_ttl_s
        self.ticket_ttl_s = ticket_ttl_s
        self._login_limit = login_limit
        # TTL 0: every authentication reads the database, as without a cache.
        self.callers = callers if callers is not None else CallerCache(0)
        # Set by the realtime layer: publishes the change to every node (this one too).
        # Left None on a single node without a hub, where the local drop is all it takes.
        self.on_caller_changed: CallerChanged | None = None

    async def register(self, *, email: str, password: str, name: str, role: str = "user") -> User:
        password_hash = await hash_password(password)
        async with self._db.transaction() as session:
            return await users_repo.create_user(
                session,
                email=normalise_email(email),
                name=name,
                password_hash=password_hash,
                role=role,
            )

    async def login(self, *, email: str, password: str, client_ip: str) -> LoginResult:
        email = normalise_email(email)
        # Two throttles: one stops guessing one account from many places, the other
        # stops one place guessing many accounts.
        message = "too many login attempts, try again later"
        await self._limiter.hit(self._login_limit, f"email:{email}", message)
        await self._limiter.hit(self._login_limit, f"ip:{client_ip}", message)
        async with self._db.transaction() as session:
            user = await users_repo.get_user_by_email(session, email)
        if not await verify_password(user.password_hash if user else None, password):
            raise Unauthorized("wrong email or password")
        assert user is not None
        if user.disabled:
            raise Forbidden("this account is disabled")
        return await self._start_family(user)

    async def refresh(self, refresh_token: str) -> LoginResult:
        now = utcnow()
        async with self._db.transaction() as session:
            token, claimed = await users_repo.claim_refresh_token(
                session, hash_refresh_token(refresh_token), now
            )
            if token is None:
                raise Unauthorized("unknown refresh token")
            if not claimed:
                # A used token came back: someone holds a copy. Revoke the whole family
                # so that neither the thief nor the victim can keep rotating it.
                await users_repo.revoke_family(session, token.family_id, now)
        if not claimed:
            raise Unauthorized("refresh token reuse detected; the session was revoked")
        if token.revoked_at is not None or token.expires_at <= now:
            raise Unauthorized("refresh token expired or revoked")
        async with self._db.transaction() as session:
            user = await users_repo.get_user(session, token.user_id)
        if user is None or user.disabled:
            raise Unauthorized("account unavailable")
        return await self._start_family(user, family_id=token.family_id)

    async def logout(self, refresh_token: str | None) -> None:
        if not refresh_token:
            return
        now = utcnow()
        async with self._db.transaction() as session:
            token, _ = await users_repo.claim_refresh_token(
                session, hash_refresh_token(refresh_token), now
            )
            if token is not None:
                await users_repo.revoke_family(session, token.family_id, now)

    async def logout_all(self, user_id: uuid.UUID) -> None:
        now = utcnow()
        async with self._db.transaction() as session:
            await users_repo.revoke_all_families(session, user_id, now)
            # iat has millisecond resolution: revoke what was issued before this
            # millisecond began, so a login in the very next request still works.
            cutoff = datetime.fromtimestamp(issued_at_ms(now), UTC)
            await users_repo.revoke_access_tokens_before(session, user_id, cutoff)
        await self.caller_changed(user_id)

    async def set_disabled(
        self, principal: Principal, user_id: uuid.UUID, disabled: bool
    ) -> dict[str, Any]:
        """An admin disables or re-enables an account; its tokens stop (or start)
        working at once, on every node."""
        if not principal.is_admin:
            raise Forbidden("only an admin may disable or enable accounts")
        if user_id == principal.user_id and disabled:
            raise Conflict("an admin cannot disable their own account")
        async with self._db.transaction() as session:
            found = await users_repo.set_disabled(session, user_id, disabled)
        if not found:
            raise NotFound("user not found")
        await self.caller_changed(user_id)
        return {"user_id": str(user_id), "disabled": disabled}

    async def caller_changed(self, user_id: uuid.UUID) -> None:
        """Forget the user's cached caller row here and on every other node.

        Call it after the change has committed, from every path that changes what
        ``users_repo.caller`` returns (name, role, disabled, token revocation). A read
        that raced with the change cannot put the old row back (see ``CallerCache``).
        When the bus is down the other nodes do not hear of it; their entries then
        expire within ``CALLER_CACHE_TTL_S``.
        """
        # Dropped here first: this node's own notice comes back over the bus later.
        self.callers.drop(user_id)
        if self.on_caller_changed is not None:
            await self.on_caller_changed(user_id)

    async def profile(self, user_id: uuid.UUID) -> dict[str, Any]:
        async with self._db.transaction() as session:
            user = await users_repo.get_user(session, user_id)
        if user is None:
            raise Unauthorized("account unavailable")
        return user_to_wire(user)

    async def issue_ticket(self, principal: Principal) -> tuple[str, int]:
        ticket = await self._tickets.issue(
            {"user_id": str(principal.user_id), "name": principal.name, "role": principal.role},
            self.ticket_ttl_s,
        )
        return ticket, self.ticket_ttl_s

    async def redeem_ticket(self, ticket: str) -> Principal:
        data = await self._tickets.redeem(ticket)
        if data is None:
            raise Unauthorized("unknown, used or expired ticket")
        return await self._principal_for(uuid.UUID(data["user_id"]), None, None)

    async def authenticate(self, access_token: str) -> Principal:
        claims = await self.tokens.verify(access_token)
        return await self._principal_for(claims.user_id, claims, claims.expires_at)

    async def _principal_for(
        self, user_id: uuid.UUID, claims: Claims | None, expires_at: datetime | None
    ) -> Principal:
        if claims is not None and claims.external:
            # Another service's user: the first sight creates the local row.
            async with self._db.transaction() as session:
                user = await users_repo.ensure_external_user(
                    session, user_id, name=claims.name or "user", role=claims.role
                )
            if user.disabled:
                raise Unauthorized("account unavailable")
            return Principal(user_id=user.id, name=user.name, role=user.role, expires_at=expires_at)
        caller = await self._caller(user_id)
        if caller is None or caller.disabled:
            raise Unauthorized("account unavailable")
        revoked_before = caller.revoked_before
        if claims is not None and revoked_before is not None and claims.issued_at < revoked_before:
            raise Unauthorized("token revoked")
        return Principal(user_id=user_id, name=caller.name, role=caller.role, expires_at=expires_at)

    async def _caller(self, user_id: uuid.UUID) -> users_repo.Caller | None:
        """The user's caller row, from this node's cache when it holds a fresh one."""
        cached = self.callers.get(user_id)
        if cached is not None:
            return cached
        generation = self.callers.generation
        async with self._db.read() as session:
            caller = await users_repo.caller(session, user_id)
        # A miss is not cached: it is rare (a deleted account) and the token fails anyway.
        if caller is not None:
            self.callers.put(user_id, caller, generation)
        return caller

    async def _start_family(self, user: User, family_id: uuid.UUID | None = None) -> LoginResult:
        access, ttl = self.tokens.issue_access_token(user.id, role=user.role, name=user.name)
        refresh = new_refresh_token()
        async with self._db.transaction() as session:
            await users_repo.store_refresh_token(
                session,
                user_id=user.id,
                family_id=family_id or uuid.uuid4(),
                token_hash=hash_refresh_token(refresh),
                expires_at=utcnow() + timedelta(seconds=self._refresh_ttl_s),
            )
        return LoginResult(access, ttl, refresh, self._refresh_ttl_s, user)


def normalise_email(email: str) -> str:
    email = email.strip().lower()
    if "@" not in email or email.startswith("@") or email.endswith("@") or len(email) > 320:
        raise BadRequest("email is not a valid address", details={"field": "email"})
    return email
