"""``chat_sessions.history_revision``: when a node's cached context is still current.

Each node keeps the recent turns of the sessions it answers in memory
(``server.assistant.turn_cache``), so the first token of an answer does not wait on
reading hundreds of rows. A cached copy is current when the session's ``last_seq``
is the one it knows (nothing was appended behind its back) and this counter is too:
every other change to what a turn reads (a deleted message, a new summary, the
system prompt or model, documents, members) bumps it in the same transaction.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "chat_sessions",
        sa.Column("history_revision", sa.Integer(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    with op.batch_alter_table("chat_sessions") as batch:
        batch.drop_column("history_revision")
