"""Retrieval for a turn: passages from the session's documents and older messages.

``retrieve`` ranks the session's chunks lexically (full-text, ``db.repositories.
retrieval``) and, when an embeddings endpoint is configured, semantically (cosine
over the stored vectors); the two rankings are merged with reciprocal-rank fusion
(``rag.ranking.fuse``). Passages come back best first, each labelled with its source
(document title, or the earlier message's seq), cut off once ``budget_tokens`` is
used: the caller renders them with ``rag.ranking.format_passages``.

``index_history`` keeps what a rolling summary folded away retrievable: the messages
up to the summary's ``covers_seq`` become history chunks (once per seq).

Retrieval is an aid, never a reason to fail a turn: an embeddings outage falls back
to lexical ranking alone.
"""

from __future__ import annotations

import logging
import uuid

from db.engine import Database
from db.repositories import retrieval as retrieval_repo
from db.repositories.retrieval import ChunkHit, HistoryPiece
from errors import ParleyError
from llm.tokens import count_text
from rag.chunking import chunk_document
from rag.embeddings import EmbeddingsClient
from rag.query import postgres_query, sqlite_fts_query
from rag.ranking import Passage, fuse
from rag.vectors import pack, top_k

log = logging.getLogger(__name__)

CANDIDATES = 20  # per ranking, before fusion
HISTORY_BATCH = 200  # messages indexed per transaction


class Retriever:
    def __init__(
        self,
        database: Database,
        embeddings: EmbeddingsClient | None = None,
        *,
        candidates: int = CANDIDATES,
    ) -> None:
        self._db = database
        self._embeddings = embeddings
        self._candidates = candidates

    async def retrieve(
        self,
        session_id: uuid.UUID,
        query_text: str,
        *,
        budget_tokens: int,
        exclude_after_seq: int | None = None,
    ) -> list[Passage]:
        """Passages for ``query_text``, best first, within about ``budget_tokens``.

        The last passage may overrun the budget; ``format_passages`` cuts it. History
        chunks after ``exclude_after_seq`` are left out (they are recent turns).
        """
        if budget_tokens <= 0 or not query_text.strip():
            return []
        lexical_query = (
            postgres_query(query_text)
            if self._db.dialect == "postgresql"
            else sqlite_fts_query(query_text)
        )
        query_vector = await self._query_vector(query_text)
        async with self._db.read() as session:
            lexical = await retrieval_repo.lexical_search(
                session,
                session_id,
                lexical_query,
                limit=self._candidates,
                exclude_after_seq=exclude_after_seq,
            )
            hits = {hit.chunk_id: hit for hit in lexical}
            rankings = [[str(hit.chunk_id) for hit in lexical]]
            similarity: dict[int, float] = {}
            if query_vector is not None:
                stored = await retrieval_repo.embeddings_for_session(
                    session, session_id, exclude_after_seq=exclude_after_seq
                )
                best = top_k(query_vector, ((str(i), v) for i, v in stored), self._candidates)
                similarity = {int(i): score for i, score in best}
                rankings.append([i for i, _ in best])
                missing = [i for i in similarity if i not in hits]
                for hit in await retrieval_repo.chunks_by_ids(session, session_id, missing):
                    hits[hit.chunk_id] = hit
        order = fuse(rankings) if len(rankings) > 1 else rankings[0]
        return _within_budget(
            [_passage(hits[int(i)], similarity) for i in order if int(i) in hits], budget_tokens
        )

    async def index_history(self, session_id: uuid.UUID, up_to_seq: int) -> int:
        """Index every live message up to ``up_to_seq`` not indexed yet; returns how many."""
        indexed = 0
        while True:
            async with self._db.transaction() as session:
                messages = await retrieval_repo.unindexed_messages(
                    session, session_id, up_to_seq, limit=HISTORY_BATCH
                )
            if not messages:
                return indexed
            pieces = [
                HistoryPiece(seq=m.seq, ordinal=c.ordinal, role=m.role, text=c.text)
                for m in messages
                for c in chunk_document(m.content)
            ]
            pieces = await self._with_embeddings(pieces)
            async with self._db.transaction() as session:
                indexed += await retrieval_repo.index_history(session, session_id, pieces)
            if len(messages) < HISTORY_BATCH:
                return indexed

    async def _query_vector(self, query_text: str) -> list[float] | None:
        if self._embeddings is None:
            return None
        try:
            return await self._embeddings.embed_one(query_text)
        except ParleyError as exc:
            log.warning("semantic retrieval skipped: %s", exc.message)
            return None

    async def _with_embeddings(self, pieces: list[HistoryPiece]) -> list[HistoryPiece]:
        if self._embeddings is None or not pieces:
            return pieces
        try:
            vectors = await self._embeddings.embed([p.text for p in pieces])
        except ParleyError as exc:
            log.warning("history indexed without embeddings: %s", exc.message)
            return pieces
        return [
            HistoryPiece(p.seq, p.ordinal, p.role, p.text, pack(v))
            for p, v in zip(pieces, vectors, strict=True)
        ]


def _passage(hit: ChunkHit, similarity: dict[int, float]) -> Passage:
    score = hit.score or similarity.get(hit.chunk_id, 0.0)
    if hit.document_id is not None:
        # A section's first chunk starts with its own heading line; later ones do not.
        show = hit.heading and not hit.text.lstrip().startswith("#")
        heading = f"{hit.heading}\n" if show else ""
        return Passage(
            "document", str(hit.document_id), hit.document_title or "", heading + hit.text, score
        )
    return Passage(
        "history",
        str(hit.message_seq),
        "",
        f"{hit.heading}: {hit.text}" if hit.heading else hit.text,
        score,
        seq=hit.message_seq,
    )


def _within_budget(passages: list[Passage], budget_tokens: int) -> list[Passage]:
    kept: list[Passage] = []
    used = 0
    for passage in passages:
        kept.append(passage)
        used += count_text(passage.text) + 8  # the label line and separators
        if used >= budget_tokens:
            break
    return kept
