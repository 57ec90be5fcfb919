"""Users, external identities, refresh-token families and access-token revocation."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import bindparam, exists, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import ExternalIdentity, RefreshFamily, RefreshToken, RevokedAccessToken, User
from errors import Conflict


async def create_user(
    session: AsyncSession, *, email: str, name: str, password_hash: str | None, role: str = "user"
) -> User:
    user = User(email=email, name=name, password_hash=password_hash, role=role)
    session.add(user)
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Conflict("an account with this email already exists") from exc
    return user


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    return await session.get(User, user_id)


class Caller(NamedTuple):
    name: str
    role: str
    disabled: bool
    revoked_before: datetime | None  # access tokens issued earlier are revoked
    # Families revoked recently enough that access tokens issued from them may live.
    revoked_families: frozenset[uuid.UUID] = frozenset()


# Every authenticated request reads this: one prebuilt statement, user and revocation.
_CALLER = (
    select(User.name, User.role, User.disabled, RevokedAccessToken.not_before)
    .outerjoin(RevokedAccessToken, RevokedAccessToken.user_id == User.id)
    .where(User.id == bindparam("user_id"))
)


_REVOKED_FAMILIES = select(RefreshFamily.id).where(
    RefreshFamily.user_id == bindparam("user_id"),
    RefreshFamily.revoked_at > bindparam("since", type_=RefreshFamily.revoked_at.type),
)


async def caller(
    session: AsyncSession, user_id: uuid.UUID, families_revoked_since: datetime
) -> Caller | None:
    """``families_revoked_since``: older revocations outlived every access token of
    their family, so they need not be carried."""
    connection = await session.connection()
    row = (await connection.execute(_CALLER, {"user_id": user_id})).first()
    if row is None:
        return None
    families = await connection.execute(
        _REVOKED_FAMILIES, {"user_id": user_id, "since": families_revoked_since}
    )
    return Caller(*row, revoked_families=frozenset(families.scalars()))


async def set_disabled(session: AsyncSession, user_id: uuid.UUID, disabled: bool) -> bool:
    """Returns whether the user exists. Nodes cache this flag: go through
    ``AccountService.set_disabled``, which tells them."""
    result = await session.execute(update(User).where(User.id == user_id).values(disabled=disabled))
    return result.rowcount == 1  # type: ignore[attr-defined]


async def get_user_by_email(session: AsyncSession, email: str) -> User | None:
    return (await session.execute(select(User).where(User.email == email))).scalar_one_or_none()


async def external_user(
    session: AsyncSession, *, issuer: str, subject: str, name: str, role: str
) -> User:
    """The local user mapped to another issuer's (issuer, subject); first sight creates
    it with an id of its own, so a subject equal to a local user's id means nothing.
    A concurrent first sight fails on the primary key: the caller retries."""
    found = (
        await session.execute(
            select(User)
            .join(ExternalIdentity, ExternalIdentity.user_id == User.id)
            .where(ExternalIdentity.issuer == issuer, ExternalIdentity.subject == subject)
        )
    ).scalar_one_or_none()
    if found is not None:
        return found
    user = await _legacy_external_user(session, subject)
    if user is None:
        user = User(id=uuid.uuid4(), name=name, password_hash=None, role=role, email="")
        user.email = f"{user.id}@external.invalid"
        session.add(user)
        await session.flush()  # the row the identity names goes in first
    session.add(ExternalIdentity(issuer=issuer, subject=subject, user_id=user.id))
    try:
        await session.flush()
    except IntegrityError as exc:
        raise Conflict("this external identity was mapped concurrently") from exc
    return user


async def _legacy_external_user(session: AsyncSession, subject: str) -> User | None:
    """A row made for this subject before identities were recorded (its id is the
    subject, it has no password, and no identity claims it yet)."""
    try:
        user_id = uuid.UUID(subject)
    except ValueError:
        return None
    return (
        await session.execute(
            select(User).where(
                User.id == user_id,
                User.password_hash.is_(None),
                User.email == f"{user_id}@external.invalid",
                ~exists().where(ExternalIdentity.user_id == User.id),
            )
        )
    ).scalar_one_or_none()


async def create_family(
    session: AsyncSession, *, user_id: uuid.UUID, expires_at: datetime
) -> RefreshFamily:
    family = RefreshFamily(user_id=user_id, expires_at=expires_at)
    session.add(family)
    await session.flush()
    return family


async def get_family(session: AsyncSession, family_id: uuid.UUID) -> RefreshFamily | None:
    return await session.get(RefreshFamily, family_id)


async def store_refresh_token(
    session: AsyncSession,
    *,
    user_id: uuid.UUID,
    family_id: uuid.UUID,
    token_hash: str,
    expires_at: datetime,
) -> RefreshToken:
    token = RefreshToken(
        user_id=user_id, family_id=family_id, token_hash=token_hash, expires_at=expires_at
    )
    session.add(token)
    await session.flush()
    return token


async def claim_refresh_token(
    session: AsyncSession, token_hash: str, now: datetime
) -> tuple[RefreshToken | None, bool]:
    """Mark the token used; returns it and whether this call was the one that used it.

    One conditional UPDATE decides: exactly one of two concurrent refreshes with the
    same token sees ``used_at IS NULL`` (PostgreSQL re-checks it after the winner's
    row lock is released; SQLite's writers are serialised), and only while the token
    and its family are alive. Store the successor in the same transaction.
    """
    token = (
        await session.execute(select(RefreshToken).where(RefreshToken.token_hash == token_hash))
    ).scalar_one_or_none()
    if token is None:
        return None, False
    # Every transaction that changes a family takes its row first (revoke_family's
    # UPDATE does too): with the token's row taken first here, a refresh and a
    # concurrent reuse's revocation locked the two rows in opposite orders and
    # PostgreSQL broke the deadlock by failing one of them. SQLite ignores FOR UPDATE;
    # its writers are serialised anyway.
    await session.execute(
        select(RefreshFamily.id).where(RefreshFamily.id == token.family_id).with_for_update()
    )
    family_alive = exists().where(
        RefreshFamily.id == RefreshToken.family_id,
        RefreshFamily.revoked_at.is_(None),
        RefreshFamily.expires_at > now,
    )
    claimed = await session.execute(
        update(RefreshToken)
        .where(
            RefreshToken.id == token.id,
            RefreshToken.used_at.is_(None),
            RefreshToken.revoked_at.is_(None),
            RefreshToken.expires_at > now,
            family_alive,
        )
        .values(used_at=now)
    )
    return token, claimed.rowcount == 1  # type: ignore[attr-defined]


async def revoke_family(session: AsyncSession, family_id: uuid.UUID, now: datetime) -> None:
    await session.execute(
        update(RefreshFamily)
        .where(RefreshFamily.id == family_id, RefreshFamily.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )


async def revoke_all_families(session: AsyncSession, user_id: uuid.UUID, now: datetime) -> None:
    await session.execute(
        update(RefreshFamily)
        .where(RefreshFamily.user_id == user_id, RefreshFamily.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )


async def revoke_access_tokens_before(
    session: AsyncSession, user_id: uuid.UUID, instant: datetime
) -> None:
    values = {"user_id": user_id, "not_before": instant}
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(RevokedAccessToken).values(**values)
    statement = statement.on_conflict_do_update(
        index_elements=[RevokedAccessToken.user_id], set_={"not_before": instant}
    )
    await session.execute(statement)


async def count_users(session: AsyncSession) -> int:
    return (await session.execute(select(func.count()).select_from(User))).scalar_one()
