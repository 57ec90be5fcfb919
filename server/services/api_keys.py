"""Per-user API keys for the OpenAI-compatible front door.

A key is shown once, at creation (``pk_`` and 43 URL-safe characters); only its
SHA-256 is stored, so a database leak gives no usable key. The first characters are
kept as ``prefix`` so that the owner can tell keys apart in the list.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cachetools import TTLCache

from db.engine import Database
from db.models import ApiKey
from db.repositories import api_keys as keys_repo
from db.types import utcnow
from errors import BadRequest, Conflict, NotFound, ParleyError, Unauthorized
from server.services.accounts import AccountService, Principal

log = logging.getLogger("parley.api_keys")

KEY_PREFIX = "pk_"
SHOWN_PREFIX_CHARS = 10  # "pk_" and 7 characters of the secret
MAX_KEYS_PER_USER = 20
# ``last_used_at`` is written at most this often per key: not a write per request.
TOUCH_EVERY = timedelta(seconds=60)
# Verified keys kept per node: a front-door request reads no key row. A revocation
# evicts the key here at once and on other nodes through the bus
# (``ControlOp.API_KEY_REVOKED``); with the bus down, within this TTL.
VERIFIED_KEYS = 4096
VERIFIED_TTL_S = 30.0


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def looks_like_key(credential: str) -> bool:
    return credential.startswith(KEY_PREFIX)


def key_to_wire(key: ApiKey) -> dict[str, Any]:
    return {
        "id": str(key.id),
        "name": key.name,
        "prefix": key.prefix,
        "created_at": key.created_at.isoformat(),
        "last_used_at": key.last_used_at.isoformat() if key.last_used_at else None,
    }


@dataclass(slots=True)
class VerifiedKey:
    key_id: uuid.UUID
    user_id: uuid.UUID
    created_at: datetime
    last_used_at: datetime | None


class VerifiedKeys:
    """Live keys this node has read, by the SHA-256 of the secret: bounded, and each
    entry read again after ``VERIFIED_TTL_S``."""

    def __init__(self, maxsize: int = VERIFIED_KEYS, ttl_s: float = VERIFIED_TTL_S) -> None:
        self._keys: TTLCache[str, VerifiedKey] = TTLCache(maxsize, ttl_s)

    def get(self, key_hash: str) -> VerifiedKey | None:
        return self._keys.get(key_hash)

    def put(self, key_hash: str, key: VerifiedKey) -> None:
        self._keys[key_hash] = key

    def drop(self, key_id: uuid.UUID) -> None:
        for key_hash in [h for h, k in list(self._keys.items()) if k.key_id == key_id]:
            self._keys.pop(key_hash, None)

    def clear(self) -> None:
        self._keys.clear()

    def __len__(self) -> int:
        return len(self._keys)


class ApiKeyService:
    def __init__(
        self,
        database: Database,
        accounts: AccountService,
        *,
        verified: VerifiedKeys | None = None,
        revoked: Callable[[uuid.UUID], Awaitable[None]] | None = None,
    ) -> None:
        self._db = database
        self._accounts = accounts
        self._touching: set[asyncio.Task[None]] = set()
        self.verified = verified if verified is not None else VerifiedKeys()
        # Tells every other node to drop the key (``ApiKeyNotices.key_revoked``).
        self._revoked = revoked

    async def create(self, principal: Principal, name: str) -> dict[str, Any]:
        name = name.strip()
        if not 1 <= len(name) <= 100:
            raise BadRequest("name must be 1..100 characters", details={"field": "name"})
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        async with self._db.transaction() as session:
            if len(await keys_repo.list_for_user(session, principal.user_id)) >= MAX_KEYS_PER_USER:
                raise Conflict(f"at most {MAX_KEYS_PER_USER} API keys; revoke one first")
            key = await keys_repo.create(
                session,
                user_id=principal.user_id,
                name=name,
                prefix=secret[:SHOWN_PREFIX_CHARS],
                key_hash=hash_key(secret),
            )
            body = key_to_wire(key)
        return {**body, "key": secret}

    async def list_for(self, principal: Principal) -> list[dict[str, Any]]:
        async with self._db.read() as session:
            return [
                key_to_wire(k) for k in await keys_repo.list_for_user(session, principal.user_id)
            ]

    async def revoke(self, principal: Principal, key_id: uuid.UUID) -> None:
        async with self._db.transaction() as session:
            if not await keys_repo.revoke(session, principal.user_id, key_id):
                raise NotFound("API key not found")
        self.verified.drop(key_id)
        if self._revoked is not None:
            try:
                await self._revoked(key_id)
            except ParleyError as exc:
                # Revoked in the database: other nodes stop it within VERIFIED_TTL_S.
                log.warning("revocation of API key %s not announced: %s", key_id, exc.message)

    async def authenticate(self, secret: str) -> Principal:
        """The owner of a live key; ``Unauthorized`` for an unknown or revoked one.
        The key row is read once per ``VERIFIED_TTL_S`` (the owner's account is
        checked every time, through the caller cache)."""
        key_hash = hash_key(secret)
        key = self.verified.get(key_hash)
        if key is None:
            async with self._db.read() as session:
                row = await keys_repo.find_live(session, key_hash)
            if row is None:
                raise Unauthorized("invalid API key")
            key = VerifiedKey(row.id, row.user_id, row.created_at, row.last_used_at)
            self.verified.put(key_hash, key)
        principal = await self._accounts.principal_for_key(key.user_id, key.created_at)
        now = utcnow()
        if key.last_used_at is None or now - key.last_used_at >= TOUCH_EVERY:
            key.last_used_at = now
            # Off the request's path: the answer does not wait on this write.
            task = asyncio.create_task(self._touch(key.key_id))
            self._touching.add(task)
            task.add_done_callback(self._touching.discard)
        return principal

    async def _touch(self, key_id: uuid.UUID) -> None:
        try:
            async with self._db.transaction() as session:
                await keys_repo.touch(session, key_id, utcnow())
        except ParleyError as exc:
            log.warning("last use of API key %s not recorded: %s", key_id, exc.message)

    async def drain(self) -> None:
        await asyncio.gather(*self._touching, return_exceptions=True)
