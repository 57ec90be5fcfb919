"""Stored full-text vectors for ``chunks`` on PostgreSQL.

0001 indexed the expression ``to_tsvector('english', text)``: the index finds the
matching rows, but ranking them (``ts_rank_cd``) parsed every matching chunk's text
again, which made questions with a common word slow (bench/retrieval.py). A stored
generated column keeps the parsed vector beside the text, computed once on write;
the GIN index moves to it under the same name, ``ix_chunks_fts``.

The index is built with ``fastupdate = off``. With GIN's default pending list, the
chunks of recent uploads wait unsorted in that list until a vacuum merges them, and
every search scans the whole list: after loading 1,000 documents the list held
1,800 chunks, the planner priced the index above a sequential scan, and a query took
6 ms instead of 0.5 ms. Writing each chunk into the index at once makes uploads a
little slower and searches fast whether or not autovacuum has run.

SQLite is unchanged: its FTS5 table already stores what it ranks with.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP INDEX IF EXISTS ix_chunks_fts")
    op.execute(
        "ALTER TABLE chunks ADD COLUMN search_vector tsvector "
        "GENERATED ALWAYS AS (to_tsvector('english', text)) STORED"
    )
    op.execute(
        "CREATE INDEX ix_chunks_fts ON chunks USING gin (search_vector) WITH (fastupdate = off)"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP INDEX IF EXISTS ix_chunks_fts")
    op.execute("ALTER TABLE chunks DROP COLUMN IF EXISTS search_vector")
    op.execute("CREATE INDEX ix_chunks_fts ON chunks USING gin (to_tsvector('english', text))")
