"""Spend per upstream call and per-user budgets.

``spend_events`` holds one row per request sent to a model (answers, retries,
fallbacks, summaries, memory extraction, search-tool rounds, re-asked answers), with
its tokens and what it cost in nano-dollars (integers add up the same on every
backend). ``user_id`` asked; ``payer_id`` is whose budget it counts against (the asker,
or the room's owner with ``BUDGET_PAYER=owner``). ``user_budgets`` holds an admin's
override of the default budget.

Revision ID: 0007_budgets
Revises: 0006_api_keys
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_budgets"
down_revision = "0006_api_keys"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "spend_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("payer_id", sa.Uuid(), nullable=True),
        sa.Column("session_id", sa.Uuid(), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("cost_nano_usd", sa.BigInteger(), nullable=False),
        sa.Column("estimated", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["payer_id"], ["users.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["session_id"], ["chat_sessions.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_spend_events_payer_created", "spend_events", ["payer_id", "created_at"])
    op.create_table(
        "user_budgets",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("tokens_per_period", sa.BigInteger(), nullable=True),
        sa.Column("nano_usd_per_period", sa.BigInteger(), nullable=True),
        sa.Column("period", sa.String(length=8), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id"),
    )


def downgrade() -> None:
    op.drop_table("user_budgets")
    op.drop_index("ix_spend_events_payer_created", table_name="spend_events")
    op.drop_table("spend_events")
