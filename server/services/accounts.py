"""Accounts: registration, login with throttling, refresh rotation with reuse detection,
logout, and turning a credential into a ``Principal``.

Every credential ends in the same checks (``_principal_for``): the account exists and
is enabled, the token was issued after the user's last logout-all, and its refresh
family (``fam``) is not revoked. Access tokens, WebSocket tickets (which carry their
token's ``iat``, ``exp`` and ``fam``) and external tokens (mapped by issuer and
subject) all pass through them.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cachetools import TTLCache

from db.engine import Database
from db.models import User
from db.repositories import users as users_repo
from db.types import utcnow
from errors import BadRequest, Conflict, Forbidden, NotFound, Unauthorized
from server.security.callers import CallerCache
from server.security.passwords import hash_password, verify_password
from server.security.ratelimit import Limit, RateLimiter
from server.security.tickets import TicketStore
from server.security.tokens import (
    Claims,
    TokenService,
    hash_refresh_token,
    issued_at_ms,
    new_refresh_token,
)

log = logging.getLogger(__name__)

# (issuer, subject) -> local user id: the mapping never changes once made.
EXTERNAL_IDS_CACHED = 4096


@dataclass(frozen=True)
class Principal:
    """Who is calling: the checked identity behind a request or a connection."""

    user_id: uuid.UUID
    name: str
    role: str
    expires_at: datetime | None
    # The credential's refresh family: revoking it closes what the credential opened.
    family_id: uuid.UUID | None = None
    issued_at: datetime | None = None

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
    device_token: str | None = None


@dataclass(frozen=True)
class LoginLimits:
    """Failed logins only are counted. ``pair``: one account from one address;
    ``account``: one account from anywhere (a device that signed in to the account
    before is exempt, so guessing cannot lock its owner out); ``ip``: one address,
    any account, with a ceiling high enough for an office behind one NAT."""

    pair: Limit
    account: Limit
    ip: Limit


LOGIN_THROTTLED = "too many failed logins, try again later"

# Tells the other nodes that a user's caller row changed (see ``caller_changed``).
CallerChanged = Callable[[uuid.UUID], Awaitable[None]]
# Closes the connections opened with a revoked family's credentials, on every node.
FamilyRevoked = Callable[[uuid.UUID, uuid.UUID], Awaitable[None]]


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
        login_limit: Limit | LoginLimits,
        family_max_age_s: int = 90 * 24 * 3600,
        callers: CallerCache | None = None,
        on_caller_changed: CallerChanged | None = None,
        on_family_revoked: FamilyRevoked | None = None,
    ) -> None:
        self._db = database
        self.tokens = tokens
        self._tickets = tickets
        self._limiter = limiter
        self._refresh_ttl_s = refresh_ttl_s
        self._family_max_age_s = family_max_age_s
        self.ticket_ttl_s = ticket_ttl_s
        # One Limit serves as all three (as tests and small setups pass it).
        self._login_limits = (
            login_limit
            if isinstance(login_limit, LoginLimits)
            else LoginLimits(pair=login_limit, account=login_limit, ip=login_limit)
        )
        self._external_ids: TTLCache[tuple[str, str], uuid.UUID] = TTLCache(
            EXTERNAL_IDS_CACHED, 3600
        )
        # TTL 0: every authentication reads the database, as without a cache.
        self.callers = callers if callers is not None else CallerCache(0)
        # Publishes the change to every node, this one too (server.services.hub_links).
        # None without a hub, where the local drop is all it takes.
        self.on_caller_changed = on_caller_changed
        # Closes the family's sockets with 4401 (server.services.hub_links).
        self.on_family_revoked = on_family_revoked

    async def register(
        self, *, email: str, password: str, name: str, role: str = "user"
    ) -> User | None:
        """The new user, or None when the address is taken. Both cost one password
        hash, and the route answers both alike, so the answer tells nobody whether an
        address has an account; the owner of a taken address just signs in."""
        email = normalise_email(email)
        if email.endswith("@external.invalid"):
            # The addresses of rows made for external identities.
            raise BadRequest("email is not a valid address", details={"field": "email"})
        password_hash = await hash_password(password)
        try:
            async with self._db.transaction() as session:
                return await users_repo.create_user(
                    session, email=email, name=name, password_hash=password_hash, role=role
                )
        except Conflict:
            log.info("registration for an address that already has an account")
            return None

    async def login(
        self, *, email: str, password: str, client_ip: str, device_token: str | None = None
    ) -> LoginResult:
        email = normalise_email(email)
        limits = self._login_limits
        keys = [
            (limits.ip, f"ip:{client_ip}"),
            (limits.pair, f"pair:{email}|{client_ip}"),
            (limits.account, f"email:{email}"),
        ]
        async with self._db.transaction() as session:
            user = await users_repo.get_user_by_email(session, email)
        known_device = user is not None and self.tokens.device_account(device_token) == user.id
        # Only failures count, and the account-wide lock spares the owner's devices.
        checked = keys[:2] if known_device else keys
        for limit, key in checked:
            await self._limiter.check(limit, key, LOGIN_THROTTLED)
        if not await verify_password(user.password_hash if user else None, password):
            for limit, key in keys:
                await self._limiter.count(limit, key)
            raise Unauthorized("wrong email or password")
        assert user is not None
        if user.disabled:
            raise Forbidden("this account is disabled")
        result = await self._start_family(user)
        device = device_token if known_device else self.tokens.issue_device_token(user.id)
        return LoginResult(
            result.access_token,
            result.expires_in,
            result.refresh_token,
            result.refresh_expires_in,
            user,
            device,
        )

    async def refresh(self, refresh_token: str) -> LoginResult:
        now = utcnow()
        reused = False
        async with self._db.transaction() as session:
            token, claimed = await users_repo.claim_refresh_token(
                session, hash_refresh_token(refresh_token), now
            )
            if token is None:
                raise Unauthorized("unknown refresh token")
            if claimed:
                user = await users_repo.get_user(session, token.user_id)
                family = await users_repo.get_family(session, token.family_id)
                if user is None or user.disabled or family is None:
                    raise Unauthorized("account unavailable")
                # The successor is stored in the claim's transaction: a concurrent
                # loser's revocation lands on the family row, which every later use of
                # the successor and of the access tokens checks.
                result = await self._store_link(session, user, family.id, family.expires_at)
            elif token.revoked_at is None and token.expires_at > now:
                # A used token came back: someone holds a copy. Revoke the whole family
                # so that neither the thief nor the victim can keep rotating it.
                await users_repo.revoke_family(session, token.family_id, now)
                reused = True
        if claimed:
            return result
        if reused:
            await self._family_revoked(token.user_id, token.family_id)
            raise Unauthorized("refresh token reuse detected; the session was revoked")
        raise Unauthorized("refresh token expired or revoked")

    async def logout(self, principal: Principal, refresh_token: str | None) -> None:
        """Ends one family: the refresh token's, else the access token's own."""
        now = utcnow()
        family_id = principal.family_id
        async with self._db.transaction() as session:
            if refresh_token:
                token, _ = await users_repo.claim_refresh_token(
                    session, hash_refresh_token(refresh_token), now
                )
                if token is not None and token.user_id == principal.user_id:
                    family_id = token.family_id
            if family_id is None:
                return
            await users_repo.revoke_family(session, family_id, now)
        await self._family_revoked(principal.user_id, family_id)

    async def _family_revoked(self, user_id: uuid.UUID, family_id: uuid.UUID) -> None:
        """The family's access tokens stop at once on every node (their ``fam`` is in
        the caller row), and the sockets they opened are closed with 4401."""
        await self.caller_changed(user_id)
        if self.on_family_revoked is not None:
            await self.on_family_revoked(user_id, family_id)

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
        """The ticket carries what the token it was minted from carried, so that
        redeeming it runs the same revocation checks and the socket it opens closes
        with 4401 when that token would have expired."""
        if principal.expires_at is not None and principal.expires_at <= datetime.now(UTC):
            raise Unauthorized("token expired")
        data = {"user_id": str(principal.user_id), "name": principal.name, "role": principal.role}
        if principal.expires_at is not None:
            data["exp"] = principal.expires_at.isoformat()
        if principal.issued_at is not None:
            data["iat"] = principal.issued_at.isoformat()
        if principal.family_id is not None:
            data["fam"] = str(principal.family_id)
        ttl = self.ticket_ttl_s
        if principal.expires_at is not None:
            remaining = (principal.expires_at - datetime.now(UTC)).total_seconds()
            ttl = max(1, min(ttl, int(remaining)))
        ticket = await self._tickets.issue(data, ttl)
        return ticket, ttl

    async def redeem_ticket(self, ticket: str) -> Principal:
        data = await self._tickets.redeem(ticket)
        if data is None:
            raise Unauthorized("unknown, used or expired ticket")
        expires_at = datetime.fromisoformat(data["exp"]) if "exp" in data else None
        if expires_at is not None and expires_at <= datetime.now(UTC):
            raise Unauthorized("token expired")
        return await self._principal_for(
            uuid.UUID(data["user_id"]),
            issued_at=datetime.fromisoformat(data["iat"]) if "iat" in data else None,
            expires_at=expires_at,
            family_id=uuid.UUID(data["fam"]) if "fam" in data else None,
        )

    async def authenticate(self, access_token: str) -> Principal:
        claims = await self.tokens.verify(access_token)
        user_id = claims.user_id
        if user_id is None:
            user_id = await self._external_user(claims)
        return await self._principal_for(
            user_id,
            issued_at=claims.issued_at,
            expires_at=claims.expires_at,
            family_id=claims.family_id,
        )

    async def principal_for_key(self, user_id: uuid.UUID, created_at: datetime) -> Principal:
        """The owner of an API key, checked like a token issued when the key was made:
        a disabled account or a "sign out everywhere" after that stops the key too."""
        return await self._principal_for(
            user_id, issued_at=created_at, expires_at=None, family_id=None
        )

    async def _external_user(self, claims: Claims) -> uuid.UUID:
        """Another issuer's user, by (issuer, subject): the first sight creates a local
        row of its own; a subject that equals a local user's id means nothing here."""
        key = (claims.issuer, claims.subject)
        cached = self._external_ids.get(key)
        if cached is not None:
            return cached
        for attempt in range(2):
            try:
                async with self._db.transaction() as session:
                    user = await users_repo.external_user(
                        session,
                        issuer=claims.issuer,
                        subject=claims.subject,
                        name=claims.name or "user",
                        role=claims.role,
                    )
                break
            except Conflict:
                if attempt:  # a concurrent first sight made it: read it on the retry
                    raise
        self._external_ids[key] = user.id
        return user.id

    async def _principal_for(
        self,
        user_id: uuid.UUID,
        *,
        issued_at: datetime | None,
        expires_at: datetime | None,
        family_id: uuid.UUID | None,
    ) -> Principal:
        caller = await self._caller(user_id)
        if caller is None or caller.disabled:
            raise Unauthorized("account unavailable")
        revoked_before = caller.revoked_before
        if revoked_before is not None and (issued_at is None or issued_at < revoked_before):
            raise Unauthorized("token revoked")
        if family_id is not None and family_id in caller.revoked_families:
            raise Unauthorized("token revoked")
        return Principal(
            user_id=user_id,
            name=caller.name,
            role=caller.role,
            expires_at=expires_at,
            family_id=family_id,
            issued_at=issued_at,
        )

    async def _caller(self, user_id: uuid.UUID) -> users_repo.Caller | None:
        """The user's caller row, from this node's cache when it holds a fresh one."""
        cached = self.callers.get(user_id)
        if cached is not None:
            return cached
        generation = self.callers.generation
        # A revoked family matters while an access token issued from it may live.
        horizon = timedelta(seconds=self.tokens.access_ttl_s + 2 * self.tokens.leeway_s + 60)
        async with self._db.read() as session:
            caller = await users_repo.caller(session, user_id, utcnow() - horizon)
        # A miss is not cached: it is rare (a deleted account) and the token fails anyway.
        if caller is not None:
            self.callers.put(user_id, caller, generation)
        return caller

    async def _start_family(self, user: User) -> LoginResult:
        expires_at = utcnow() + timedelta(seconds=self._family_max_age_s)
        async with self._db.transaction() as session:
            family = await users_repo.create_family(session, user_id=user.id, expires_at=expires_at)
            return await self._store_link(session, user, family.id, expires_at)

    async def _store_link(
        self, session: Any, user: User, family_id: uuid.UUID, family_expires_at: datetime
    ) -> LoginResult:
        """A new refresh token of the family (never past the family's end) and an
        access token that names the family."""
        now = utcnow()
        refresh_expires_at = min(now + timedelta(seconds=self._refresh_ttl_s), family_expires_at)
        refresh_ttl = max(1, int((refresh_expires_at - now).total_seconds()))
        access_ttl = max(1, min(self.tokens.access_ttl_s, refresh_ttl))
        access, ttl = self.tokens.issue_access_token(
            user.id, role=user.role, name=user.name, ttl_s=access_ttl, family_id=family_id
        )
        refresh = new_refresh_token()
        await users_repo.store_refresh_token(
            session,
            user_id=user.id,
            family_id=family_id,
            token_hash=hash_refresh_token(refresh),
            expires_at=refresh_expires_at,
        )
        return LoginResult(access, ttl, refresh, refresh_ttl, user)


def normalise_email(email: str) -> str:
    email = email.strip().lower()
    if "@" not in email or email.startswith("@") or email.endswith("@") or len(email) > 320:
        raise BadRequest("email is not a valid address", details={"field": "email"})
    return email
