"""Access tokens (JWT) issued and checked with PyJWT; refresh tokens are opaque.

Parley signs its own access tokens with HS256 and ``JWT_SECRET``. With
``JWT_PUBLIC_KEY`` or ``JWT_JWKS_URL`` it also accepts RS256/ES256 tokens issued by
another service, so it can sit behind an existing login. The accepted algorithms are
always an explicit list: a token naming ``none`` or an algorithm we did not pick is
refused before its signature is looked at.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cachetools import TTLCache

from errors import Unauthorized

SYMMETRIC_ALGORITHMS = ["HS256"]
ASYMMETRIC_ALGORITHMS = ["RS256", "ES256"]
REQUIRED_CLAIMS = ["sub", "exp", "iat", "iss", "aud", "jti"]
# A client sends the same access token with every request. Its signature and claims
# are checked once (0.15 ms with PyJWT), then remembered for a minute at most and
# never past its expiry. Revocation is not decided here: the caller's row is checked
# on every request (``AccountService``).
VERIFIED_TOKENS = 8192
VERIFIED_TTL_S = 60.0


DEVICE_AUDIENCE = "parley-device"


@dataclass(frozen=True, slots=True)
class Claims:
    # None for an external token: its (issuer, subject) is mapped to a local user.
    user_id: uuid.UUID | None
    role: str
    name: str | None
    jti: str
    issued_at: datetime
    expires_at: datetime
    external: bool
    issuer: str = ""
    subject: str = ""
    # The refresh family the token was issued from (``fam``); revoking it revokes this.
    family_id: uuid.UUID | None = None


def issued_at_ms(instant: datetime) -> float:
    """``instant`` as a Unix time truncated to the millisecond, as ``iat`` carries it."""
    return int(instant.timestamp() * 1000) / 1000


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenService:
    def __init__(
        self,
        *,
        secret: str,
        issuer: str,
        audience: str,
        access_ttl_s: int,
        leeway_s: float,
        public_key: str | None = None,
        jwks_url: str | None = None,
    ) -> None:
        self._secret = secret
        self._issuer = issuer
        self._audience = audience
        self.access_ttl_s = access_ttl_s
        self._leeway = leeway_s
        self.leeway_s = leeway_s
        self._public_key = public_key
        self._jwks = jwt.PyJWKClient(jwks_url, cache_keys=True) if jwks_url else None
        # Keyed by a 16-byte digest of the token, not the token (~300 characters): with
        # one entry per connected user, the key is most of an entry's memory.
        self._verified: TTLCache[bytes, Claims] = TTLCache(VERIFIED_TOKENS, VERIFIED_TTL_S)

    def issue_access_token(
        self,
        user_id: uuid.UUID,
        *,
        role: str,
        name: str,
        ttl_s: int | None = None,
        family_id: uuid.UUID | None = None,
    ) -> tuple[str, int]:
        now = datetime.now(UTC)
        ttl = ttl_s if ttl_s is not None else self.access_ttl_s
        payload = {
            "sub": str(user_id),
            "iss": self._issuer,
            "aud": self._audience,
            # Milliseconds (NumericDate may be fractional): logout-all revokes tokens
            # issued before an instant, and whole seconds would spare a token issued
            # earlier in the same second.
            "iat": issued_at_ms(now),
            "nbf": now,
            "exp": now + timedelta(seconds=ttl),
            "jti": uuid.uuid4().hex,
            "role": role,
            "name": name,
        }
        if family_id is not None:
            payload["fam"] = str(family_id)
        return jwt.encode(payload, self._secret, algorithm="HS256"), ttl

    def issue_device_token(self, user_id: uuid.UUID) -> str:
        """A signed mark that this device signed in to this account once: it exempts
        the device from the account-wide login lock (not from the per-IP ones)."""
        payload = {
            "sub": str(user_id),
            "aud": DEVICE_AUDIENCE,
            "iss": self._issuer,
            "iat": int(time.time()),
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(payload, self._secret, algorithm="HS256")

    def device_account(self, device_token: str | None) -> uuid.UUID | None:
        """The account a device token was issued for, or None if it is not ours."""
        if not device_token:
            return None
        try:
            payload = jwt.decode(
                device_token,
                self._secret,
                algorithms=SYMMETRIC_ALGORITHMS,
                audience=DEVICE_AUDIENCE,
                issuer=self._issuer,
                options={"require": ["sub", "aud", "iss"]},
            )
            return uuid.UUID(str(payload["sub"]))
        except (jwt.PyJWTError, ValueError):
            return None

    async def verify(self, token: str) -> Claims:
        """Check signature, algorithm, time claims (with leeway), issuer and audience."""
        key = hashlib.blake2b(token.encode(), digest_size=16).digest()
        claims = self._verified.get(key)
        if claims is not None and time.time() < claims.expires_at.timestamp() + self._leeway:
            return claims
        claims = await self._verify(token)
        self._verified[key] = claims
        return claims

    async def _verify(self, token: str) -> Claims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized("malformed token") from exc
        algorithm = header.get("alg")
        if algorithm in SYMMETRIC_ALGORITHMS:
            key: Any = self._secret
            external = False
        elif algorithm in ASYMMETRIC_ALGORITHMS and (self._public_key or self._jwks):
            key = await self._asymmetric_key(token)
            external = True
        else:
            raise Unauthorized("token algorithm not accepted")
        try:
            payload = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("token expired") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from exc
        subject = str(payload["sub"])
        user_id: uuid.UUID | None = None
        if not external:
            try:
                user_id = uuid.UUID(subject)
            except ValueError as exc:
                raise Unauthorized("invalid token subject") from exc
        elif not subject or len(subject) > 255:
            raise Unauthorized("invalid token subject")
        family_id: uuid.UUID | None = None
        if "fam" in payload and not external:
            try:
                family_id = uuid.UUID(str(payload["fam"]))
            except ValueError as exc:
                raise Unauthorized("invalid token family") from exc
        try:
            # PyJWT checks that they are numbers, not that a datetime can hold them.
            issued_at = datetime.fromtimestamp(float(payload["iat"]), UTC)
            expires_at = datetime.fromtimestamp(int(payload["exp"]), UTC)
        except (OverflowError, ValueError, OSError) as exc:
            raise Unauthorized("invalid token: time claims out of range") from exc
        role = payload.get("role", "user")
        return Claims(
            user_id=user_id,
            role=role if role in ("user", "admin") else "user",
            name=payload.get("name"),
            jti=str(payload["jti"]),
            issued_at=issued_at,
            expires_at=expires_at,
            external=external,
            issuer=str(payload["iss"]),
            subject=subject,
            family_id=family_id,
        )

    async def _asymmetric_key(self, token: str) -> Any:
        if self._public_key:
            return self._public_key
        assert self._jwks is not None
        try:
            # PyJWKClient fetches over urllib, synchronously; keep it off the loop.
            signing_key = await asyncio.to_thread(self._jwks.get_signing_key_from_jwt, token)
        except jwt.PyJWTError as exc:
            raise Unauthorized("token signing key not found") from exc
        return signing_key.key
