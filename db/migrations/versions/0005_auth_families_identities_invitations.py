"""Refresh families with an absolute end, explicit external identities, invitations.

``refresh_families`` gets one row per family already in ``refresh_tokens``: it ends
when its newest token would have, and is revoked when no token of it is left alive.
``external_identities`` adopts the rows that external tokens created before (their
email is ``<sub>@external.invalid`` and they have no password); the issuer of those is
not recorded, so they are adopted on next sight (``users_repo.external_user``).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "refresh_families",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_refresh_families_user_revoked", "refresh_families", ["user_id", "revoked_at"]
    )
    op.execute(
        """
        INSERT INTO refresh_families (id, user_id, created_at, expires_at, revoked_at)
        SELECT family_id, user_id, MIN(created_at), MAX(expires_at),
               CASE WHEN COUNT(*) = COUNT(revoked_at) THEN MAX(revoked_at) END
        FROM refresh_tokens GROUP BY family_id, user_id
        """
    )
    op.create_table(
        "external_identities",
        sa.Column("issuer", sa.String(length=255), nullable=False),
        sa.Column("subject", sa.String(length=255), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("issuer", "subject"),
        sa.UniqueConstraint("user_id"),
    )
    op.create_table(
        "invitations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("session_id", sa.Uuid(), nullable=False),
        sa.Column("invitee_id", sa.Uuid(), nullable=False),
        sa.Column("inviter_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["session_id"], ["chat_sessions.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["invitee_id"], ["users.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["inviter_id"], ["users.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("session_id", "invitee_id", name="uq_invitations_session_invitee"),
    )
    op.create_index("ix_invitations_invitee", "invitations", ["invitee_id"])


def downgrade() -> None:
    op.drop_index("ix_invitations_invitee", table_name="invitations")
    op.drop_table("invitations")
    op.drop_table("external_identities")
    op.drop_index("ix_refresh_families_user_revoked", table_name="refresh_families")
    op.drop_table("refresh_families")
