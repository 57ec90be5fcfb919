"""Message versions: regenerated answers, edited questions, stored failures.

``messages`` keeps the version that is shown (its content, model and status are that
version's), so that history pages, the context builder, summaries and memory read the
shown version without a join. ``version`` says which one it is and ``version_count``
how many there are. ``message_versions`` keeps every alternative of a message that has
more than one (a message with a single version has no rows there: its row is its only
version, so storing an ordinary message costs nothing more). ``error_code`` and
``error_message`` say why an answer failed (``status = 'error'``).

Revision ID: 0008_message_versions
Revises: 0007_budgets
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_message_versions"
down_revision = "0007_budgets"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER TABLE, not a batch copy: on SQLite a copy of ``messages`` would drop
    # migration 0004's trigger.
    op.add_column(
        "messages", sa.Column("version", sa.Integer(), nullable=False, server_default="1")
    )
    op.add_column(
        "messages", sa.Column("version_count", sa.Integer(), nullable=False, server_default="1")
    )
    op.add_column("messages", sa.Column("error_code", sa.String(length=64), nullable=True))
    op.add_column("messages", sa.Column("error_message", sa.Text(), nullable=True))
    op.create_table(
        "message_versions",
        sa.Column("message_id", sa.Uuid(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        # An answer's version: which version of its question it answered.
        sa.Column("reply_version", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("message_id", "version"),
    )


def downgrade() -> None:
    op.drop_table("message_versions")
    for column in ("error_message", "error_code", "version_count", "version"):
        op.drop_column("messages", column)
