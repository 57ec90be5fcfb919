"""Spend events (one per upstream model request) and per-user budget overrides."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import SpendEvent, UserBudget
from db.types import utcnow


@dataclass(frozen=True)
class SpendRow:
    user_id: uuid.UUID | None
    payer_id: uuid.UUID | None
    session_id: uuid.UUID | None
    kind: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_nano_usd: int
    estimated: bool


@dataclass(frozen=True)
class SpendTotal:
    tokens: int
    nano_usd: int
    calls: int


@dataclass(frozen=True)
class SpendLine:
    """What one kind of call on one model cost in a period."""

    kind: str
    model: str
    calls: int
    prompt_tokens: int
    completion_tokens: int
    nano_usd: int


async def record_spend(session: AsyncSession, rows: list[SpendRow]) -> None:
    session.add_all(
        SpendEvent(
            user_id=row.user_id,
            payer_id=row.payer_id,
            session_id=row.session_id,
            kind=row.kind,
            model=row.model,
            prompt_tokens=row.prompt_tokens,
            completion_tokens=row.completion_tokens,
            cost_nano_usd=row.cost_nano_usd,
            estimated=row.estimated,
        )
        for row in rows
    )
    await session.flush()


async def spent_since(session: AsyncSession, payer_id: uuid.UUID, since: datetime) -> SpendTotal:
    """What counts against ``payer_id``'s budget since ``since``."""
    row = (
        await session.execute(
            select(
                func.coalesce(func.sum(SpendEvent.prompt_tokens + SpendEvent.completion_tokens), 0),
                func.coalesce(func.sum(SpendEvent.cost_nano_usd), 0),
                func.count(SpendEvent.id),
            ).where(SpendEvent.payer_id == payer_id, SpendEvent.created_at >= since)
        )
    ).one()
    return SpendTotal(tokens=int(row[0]), nano_usd=int(row[1]), calls=int(row[2]))


async def spend_lines(
    session: AsyncSession, payer_id: uuid.UUID, since: datetime
) -> list[SpendLine]:
    rows = await session.execute(
        select(
            SpendEvent.kind,
            SpendEvent.model,
            func.count(SpendEvent.id),
            func.coalesce(func.sum(SpendEvent.prompt_tokens), 0),
            func.coalesce(func.sum(SpendEvent.completion_tokens), 0),
            func.coalesce(func.sum(SpendEvent.cost_nano_usd), 0),
        )
        .where(SpendEvent.payer_id == payer_id, SpendEvent.created_at >= since)
        .group_by(SpendEvent.kind, SpendEvent.model)
        .order_by(SpendEvent.kind, SpendEvent.model)
    )
    return [
        SpendLine(str(kind), str(model), int(calls), int(prompt), int(completion), int(nano))
        for kind, model, calls, prompt, completion, nano in rows
    ]


async def get_budget(session: AsyncSession, user_id: uuid.UUID) -> UserBudget | None:
    return await session.get(UserBudget, user_id)


async def budget_owners(session: AsyncSession, limit: int) -> set[uuid.UUID] | None:
    """The users with a budget of their own, or None when there are more than ``limit``."""
    rows = (await session.execute(select(UserBudget.user_id).limit(limit + 1))).scalars().all()
    return None if len(rows) > limit else set(rows)


async def set_budget(
    session: AsyncSession,
    user_id: uuid.UUID,
    *,
    tokens_per_period: int | None,
    nano_usd_per_period: int | None,
    period: str,
) -> UserBudget:
    budget = await session.get(UserBudget, user_id)
    if budget is None:
        budget = UserBudget(user_id=user_id)
        session.add(budget)
    budget.tokens_per_period = tokens_per_period
    budget.nano_usd_per_period = nano_usd_per_period
    budget.period = period
    budget.updated_at = utcnow()
    await session.flush()
    return budget


async def clear_budget(session: AsyncSession, user_id: uuid.UUID) -> bool:
    budget = await session.get(UserBudget, user_id)
    if budget is None:
        return False
    await session.delete(budget)
    await session.flush()
    return True
