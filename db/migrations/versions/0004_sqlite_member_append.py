"""SQLite: a member's message is stored by one statement, as on PostgreSQL.

PostgreSQL takes the session's next ``seq`` and inserts the message in one statement
(data-modifying CTEs). SQLite has no such CTEs, so storing a message took a
transaction of two statements, twelve trips to aiosqlite's thread in all, each
waiting its turn on a busy event loop; it was the longest thing in front of an
answer's first token. Here the insert reads ``last_seq + 1`` itself, and this
trigger records it on the session in the same statement, with what the seq bump
did: the activity time, and an expired session made active again.

It fires only for a row whose ``seq`` is past the session's ``last_seq``, which only
that statement produces; inserts that bumped the seq first leave it alone.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TRIGGER = "messages_record_member_seq"


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(
        f"""
        CREATE TRIGGER {TRIGGER} AFTER INSERT ON messages
        WHEN NEW.seq > (SELECT last_seq FROM chat_sessions WHERE id = NEW.session_id)
        BEGIN
            UPDATE chat_sessions
            SET last_seq = NEW.seq,
                last_activity_at = NEW.created_at,
                status = CASE WHEN status = 'expired' THEN 'active' ELSE status END
            WHERE id = NEW.session_id;
        END
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER}")
