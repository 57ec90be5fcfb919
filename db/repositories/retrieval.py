"""Finding chunks of one session: full-text ranking, stored embeddings, history indexing.

Lexical search is dialect specific and must hit the index the migration made:

- PostgreSQL: ``search_vector @@ websearch_to_tsquery('english', :q)``, ranked by
  ``ts_rank_cd`` on the same stored vector. ``search_vector`` is a generated column
  (``to_tsvector('english', text)``, migration 0002) with the GIN index
  ``ix_chunks_fts`` on it: ranking reads the stored vector instead of parsing every
  matching chunk's text again. The column is not mapped on ``Chunk`` (it is never
  written), so it is named here. The text search configuration of the query is a
  literal (``'english'::regconfig``), matching the column's, never a parameter.
- SQLite: ``chunks_fts MATCH :q`` on the external-content FTS5 table, ranked by
  ``bm25`` (lower is better there; scores here are negated so higher is better on
  both back ends).

History chunks (``message_seq`` set) are visible only while their message is not
deleted and, when ``exclude_after_seq`` is given, only up to that seq: later messages
are already in the prompt as recent turns.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    String,
    and_,
    bindparam,
    column,
    exists,
    func,
    insert,
    literal_column,
    or_,
    select,
    table,
    text,
)
from sqlalchemy.ext.asyncio import AsyncSession

from db.models import Chunk, Document, Message
from db.repositories.sessions import bump_history_revision

_PG_CONFIG: ColumnElement[Any] = literal_column("'english'::regconfig")
_SQLITE_FTS = table("chunks_fts", column("rowid"))
HISTORY_ROLES = ("user", "assistant")


@dataclass(frozen=True, slots=True)
class ChunkHit:
    chunk_id: int
    document_id: uuid.UUID | None
    document_title: str | None
    message_seq: int | None
    heading: str
    text: str
    score: float


@dataclass(frozen=True, slots=True)
class HistoryPiece:
    """One piece of an older message to index; a long message gives several."""

    seq: int
    ordinal: int
    role: str
    text: str
    embedding: bytes | None = None


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def _visible(exclude_after_seq: bool) -> ColumnElement[bool]:
    """Chunks of ``:session_id`` that a turn may see (rules in the module docstring)."""
    history: ColumnElement[bool] = Message.deleted_at.is_(None)
    if exclude_after_seq:
        history = and_(history, Chunk.message_seq <= bindparam("up_to_seq"))
    return and_(
        Chunk.session_id == bindparam("session_id"),
        or_(Chunk.document_id.is_not(None), and_(Chunk.message_seq.is_not(None), history)),
    )


def _params(session_id: uuid.UUID, exclude_after_seq: int | None, **more: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"session_id": session_id, **more}
    if exclude_after_seq is not None:
        params["up_to_seq"] = exclude_after_seq
    return params


def _select(score: ColumnElement[float]) -> Select:
    return (
        select(
            Chunk.id,
            Chunk.document_id,
            Document.title,
            Chunk.message_seq,
            Chunk.heading,
            Chunk.text,
            score.label("score"),
        )
        .select_from(Chunk)
        .outerjoin(Document, Document.id == Chunk.document_id)
        .outerjoin(
            Message,
            and_(Message.session_id == Chunk.session_id, Message.seq == Chunk.message_seq),
        )
    )


def _hits(rows: Sequence) -> list[ChunkHit]:
    return [
        ChunkHit(
            chunk_id=row.id,
            document_id=row.document_id,
            document_title=row.title,
            message_seq=row.message_seq,
            heading=row.heading,
            text=row.text,
            score=float(row.score or 0.0),
        )
        for row in rows
    ]


def _pg_vector() -> ColumnElement[Any]:
    return literal_column("chunks.search_vector")


def _pg_query() -> ColumnElement[Any]:
    return func.websearch_to_tsquery(_PG_CONFIG, bindparam("q", type_=String))


def postgres_match(query: str) -> ColumnElement[bool]:
    """The PostgreSQL full-text condition, on the indexed ``search_vector`` column."""
    tsquery = func.websearch_to_tsquery(_PG_CONFIG, bindparam("q", query))
    return _pg_vector().op("@@")(tsquery)  # type: ignore[return-value]


@functools.cache
def _lexical_template(dialect: str, exclude_after_seq: bool) -> Select:
    """The full-text query with every value a parameter: built once per shape, because
    building and compiling a statement cost more than running it (bench/retrieval.py).
    Parameters: ``q``, ``session_id``, ``limit`` and, when excluding, ``up_to_seq``."""
    visible = _visible(exclude_after_seq)
    if dialect == "postgresql":
        vector, tsquery = _pg_vector(), _pg_query()
        score = func.ts_rank_cd(vector, tsquery)
        return (
            _select(score)
            .where(vector.op("@@")(tsquery), visible)
            .order_by(score.desc(), Chunk.id)
            .limit(bindparam("limit", type_=Integer))
        )
    bm25: ColumnElement[float] = -literal_column("bm25(chunks_fts)")
    return (
        _select(bm25)
        .join(_SQLITE_FTS, _SQLITE_FTS.c.rowid == Chunk.id)
        .where(text("chunks_fts MATCH :q").bindparams(bindparam("q", type_=String)), visible)
        .order_by(literal_column("bm25(chunks_fts)"), Chunk.id)
        .limit(bindparam("limit", type_=Integer))
    )


def lexical_statement(
    dialect: str, session_id: uuid.UUID, query: str, *, limit: int, exclude_after_seq: int | None
) -> Select:
    """The full-text query for ``dialect`` with its values bound (for EXPLAIN in tests
    and the benchmark; ``lexical_search`` executes the template with parameters)."""
    template = _lexical_template(dialect, exclude_after_seq is not None)
    return template.params(_params(session_id, exclude_after_seq, q=query, limit=limit))


async def lexical_search(
    session: AsyncSession,
    session_id: uuid.UUID,
    query: str,
    *,
    limit: int,
    exclude_after_seq: int | None = None,
) -> list[ChunkHit]:
    """Best matches first. ``query`` is already in the dialect's syntax (``rag.query``)."""
    if not query:
        return []
    template = _lexical_template(_dialect(session), exclude_after_seq is not None)
    # Core execution on the session's connection: the rows are plain tuples, and the
    # ORM's per-statement work would cost more than the query.
    connection = await session.connection()
    result = await connection.execute(
        template, _params(session_id, exclude_after_seq, q=query, limit=limit)
    )
    return _hits(result.all())


async def embeddings_for_session(
    session: AsyncSession, session_id: uuid.UUID, *, exclude_after_seq: int | None = None
) -> list[tuple[int, bytes]]:
    """(chunk id, packed vector) of every visible chunk that has an embedding."""
    rows = await session.execute(
        select(Chunk.id, Chunk.embedding)
        .select_from(Chunk)
        .outerjoin(
            Message,
            and_(Message.session_id == Chunk.session_id, Message.seq == Chunk.message_seq),
        )
        .where(_visible(exclude_after_seq is not None), Chunk.embedding.is_not(None)),
        _params(session_id, exclude_after_seq),
    )
    return [(row.id, row.embedding) for row in rows]


async def chunks_by_ids(
    session: AsyncSession, session_id: uuid.UUID, chunk_ids: Sequence[int]
) -> list[ChunkHit]:
    if not chunk_ids:
        return []
    rows = await session.execute(
        _select(literal_column("0.0")).where(
            Chunk.session_id == session_id, Chunk.id.in_(list(chunk_ids))
        )
    )
    return _hits(rows.all())


async def unindexed_messages(
    session: AsyncSession, session_id: uuid.UUID, up_to_seq: int, *, limit: int = 500
) -> list[Message]:
    """Live user and assistant messages up to ``up_to_seq`` that have no history chunk."""
    indexed = exists().where(
        Chunk.session_id == session_id,
        Chunk.document_id.is_(None),
        Chunk.message_seq == Message.seq,
    )
    rows = await session.execute(
        select(Message)
        .where(
            Message.session_id == session_id,
            Message.seq <= up_to_seq,
            Message.deleted_at.is_(None),
            Message.role.in_(HISTORY_ROLES),
            Message.content != "",
            ~indexed,
        )
        .order_by(Message.seq)
        .limit(limit)
    )
    return list(rows.scalars())


async def index_history(
    session: AsyncSession, session_id: uuid.UUID, pieces: Sequence[HistoryPiece]
) -> int:
    """Store history chunks for the seqs that have none yet; returns how many seqs.

    Idempotent per seq. Two nodes indexing the same session at once are serialised:
    by a transaction-scoped advisory lock on PostgreSQL, and by SQLite's single
    writer (``BEGIN IMMEDIATE``) there.
    """
    if not pieces:
        return 0
    if _dialect(session) == "postgresql":
        await session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
            {"key": f"parley:index-history:{session_id}"},
        )
    seqs = sorted({piece.seq for piece in pieces})
    present = await session.execute(
        select(Chunk.message_seq).where(
            Chunk.session_id == session_id,
            Chunk.document_id.is_(None),
            Chunk.message_seq.in_(seqs),
        )
    )
    done = {row[0] for row in present}
    fresh = [piece for piece in pieces if piece.seq not in done]
    if fresh:
        await bump_history_revision(session, session_id)  # it may now have passages
        await session.execute(
            insert(Chunk),
            [
                {
                    "session_id": session_id,
                    "document_id": None,
                    "message_seq": piece.seq,
                    "ordinal": piece.ordinal,
                    "heading": piece.role,
                    "text": piece.text,
                    "embedding": piece.embedding,
                }
                for piece in fresh
            ],
        )
    return len({piece.seq for piece in fresh})
