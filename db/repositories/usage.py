"""Usage events: one row per generation, for accounting and capacity planning."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import UsageEvent


async def record_usage(
    session: AsyncSession,
    *,
    user_id: uuid.UUID | None,
    session_id: uuid.UUID | None,
    message_id: uuid.UUID | None,
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
    ttft_ms: int | None,
    duration_ms: int,
    outcome: str,
) -> UsageEvent:
    event = UsageEvent(
        user_id=user_id,
        session_id=session_id,
        message_id=message_id,
        model=model,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        ttft_ms=ttft_ms,
        duration_ms=duration_ms,
        outcome=outcome,
    )
    session.add(event)
    await session.flush()
    return event


async def update_usage_tokens(
    session: AsyncSession, event_id: uuid.UUID, prompt_tokens: int, completion_tokens: int
) -> None:
    event = await session.get(UsageEvent, event_id)
    if event is not None:
        event.prompt_tokens = prompt_tokens
        event.completion_tokens = completion_tokens


async def usage_for_session(session: AsyncSession, session_id: uuid.UUID) -> list[UsageEvent]:
    rows = await session.execute(
        select(UsageEvent)
        .where(UsageEvent.session_id == session_id)
        .order_by(UsageEvent.created_at)
    )
    return list(rows.scalars())
