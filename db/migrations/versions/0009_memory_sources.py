"""Memory items know the question they were learned from.

``memories.source_message_id`` is the user's message (the question) whose exchange
an extraction learned the item from; NULL for what the user typed in themselves and
for items learned before this revision. When the shown version of that question or
of its answer changes (an edit, a regeneration, a switch of version), the items
learned from it are deleted and the version now shown is learned from again: memory
follows the version shown, as summaries do (issue 16, item 4).

On PostgreSQL the column is a foreign key (ON DELETE SET NULL: a message deleted for
good leaves what was learned from it). On SQLite it is a plain column: SQLite cannot
add a constraint with ALTER TABLE, and the batch copy of ``memories`` that would take
is avoided as in 0008 (plain ALTERs only). There a message deleted for good (its
session purged) leaves a dangling id, which no later version change matches.

Revision ID: 0009_memory_sources
Revises: 0008_message_versions
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_memory_sources"
down_revision = "0008_message_versions"
branch_labels = None
depends_on = None

INDEX = "ix_memories_source_message"
FOREIGN_KEY = "fk_memories_source_message_id_messages"


def upgrade() -> None:
    op.add_column("memories", sa.Column("source_message_id", sa.Uuid(), nullable=True))
    if op.get_bind().dialect.name != "sqlite":
        op.create_foreign_key(
            FOREIGN_KEY,
            "memories",
            "messages",
            ["source_message_id"],
            ["id"],
            ondelete="SET NULL",
        )
    op.create_index(INDEX, "memories", ["source_message_id"])


def downgrade() -> None:
    op.drop_index(INDEX, table_name="memories")
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint(FOREIGN_KEY, "memories", type_="foreignkey")
    op.drop_column("memories", "source_message_id")
