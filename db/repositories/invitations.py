"""Invitations to a session: a member is added only when the invitee accepts."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import ChatSession, Invitation, SessionMember, User


async def invite(
    session: AsyncSession, session_id: uuid.UUID, invitee_id: uuid.UUID, inviter_id: uuid.UUID
) -> bool:
    """Record the invitation unless the user is a member or invited already; returns
    whether a new one was made. Runs in a savepoint so a duplicate leaves the
    surrounding transaction usable."""
    member = await session.get(SessionMember, (session_id, invitee_id))
    if member is not None:
        return False
    try:
        async with session.begin_nested():
            session.add(
                Invitation(session_id=session_id, invitee_id=invitee_id, inviter_id=inviter_id)
            )
    except IntegrityError:
        return False
    return True


async def list_for_invitee(session: AsyncSession, invitee_id: uuid.UUID) -> list[dict[str, Any]]:
    rows = await session.execute(
        select(Invitation, ChatSession.title, User.name)
        .join(ChatSession, ChatSession.id == Invitation.session_id)
        .outerjoin(User, User.id == Invitation.inviter_id)
        .where(Invitation.invitee_id == invitee_id)
        .order_by(Invitation.created_at)
    )
    return [
        {
            "id": str(invitation.id),
            "session_id": str(invitation.session_id),
            "session_title": title,
            "invited_by": inviter_name,
            "created_at": invitation.created_at.isoformat(),
        }
        for invitation, title, inviter_name in rows
    ]


async def take(
    session: AsyncSession, invitation_id: uuid.UUID, invitee_id: uuid.UUID
) -> Invitation | None:
    """Remove the invitee's invitation and return it (None if it is not theirs)."""
    invitation = (
        await session.execute(
            delete(Invitation)
            .where(Invitation.id == invitation_id, Invitation.invitee_id == invitee_id)
            .returning(Invitation)
        )
    ).scalar_one_or_none()
    return invitation
