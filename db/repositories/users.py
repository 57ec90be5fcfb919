"""Users, refresh-token families and access-token revocation."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import RefreshToken, RevokedAccessToken, User
from server.errors import Conflict


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


# Every authenticated request reads this: one prebuilt statement, user and revocation.
_CALLER = (
    select(User.name, User.role, User.disabled, RevokedAccessToken.not_before)
    .outerjoin(RevokedAccessToken, RevokedAccessToken.user_id == User.id)
    .where(User.id == bindparam("user_id"))
)


async def caller(session: AsyncSession, user_id: uuid.UUID) -> Caller | None:
    connection = await session.connection()
    row = (await connection.execute(_CALLER, {"user_id": user_id})).first()
    return Caller(*row) if row is not None else None


async def set_disabled(session: AsyncSession, user_id: uuid.UUID, disabled: bool) -> bool:
    """Returns whether the user exists. Nodes cache this flag: go through
    ``AccountService.set_disabled``, which tells them."""
    result = await session.execute(update(User).where(User.id == user_id).values(disabled=disabled))
    return result.rowcount == 1  # type: ignore[attr-defined]


async def get_user_by_email(session: AsyncSession, email: str) -> User | None:
    return (await session.execute(select(User).where(User.email == email))).scalar_one_or_none()


async def ensure_external_user(
    session: AsyncSession, user_id: uuid.UUID, *, name: str, role: str
) -> User:
    """The local row for a user whose token another service issued (first sight creates it)."""
    user = await session.get(User, user_id)
    if user is None:
        user = User(
            id=user_id,
            email=f"{user_id}@external.invalid",
            name=name,
            password_hash=None,
            role=role,
        )
        session.add(user)
        await session.flush()
    return user


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

    The conditional UPDATE makes two concurrent refreshes with the same token race
    safely: exactly one sees ``used_at IS NULL``; the other is treated as reuse.
    """
    token = (
        await session.execute(select(RefreshToken).where(RefreshToken.token_hash == token_hash))
    ).scalar_one_or_none()
    if token is None:
        return None, False
    claimed = await session.execute(
        update(RefreshToken)
        .where(RefreshToken.id == token.id, RefreshToken.used_at.is_(None))
        .values(used_at=now)
    )
    return token, claimed.rowcount == 1  # type: ignore[attr-defined]


async def revoke_family(session: AsyncSession, family_id: uuid.UUID, now: datetime) -> None:
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )


async def revoke_all_families(session: AsyncSession, user_id: uuid.UUID, now: datetime) -> None:
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
