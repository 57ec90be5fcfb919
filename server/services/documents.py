"""Documents a session's assistant retrieves from: upload, list, delete.

An upload is checked (``rag.chunking.validate_document``: UTF-8 text or Markdown,
within ``MAX_DOCUMENT_BYTES``, not empty), cut into chunks and, when an embeddings
endpoint is configured, embedded, and then stored with its chunks in one
transaction: a refused or failed upload stores nothing. An embeddings outage does
not refuse the upload; its chunks stay findable by full-text search.

Checking, chunking and tokenising a document is CPU work (a 1 MB document held the
event loop for ~450 ms): it runs in a worker thread, two at a time per node. Each
user may keep ``UPLOAD_QUOTA_BYTES`` / ``UPLOAD_QUOTA_DOCUMENTS`` uploaded; beyond
either an upload is ``TooLarge`` (413) naming the quota.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import uuid
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from db.engine import Database
from db.models import Document
from db.repositories import documents as documents_repo
from db.repositories.documents import NewChunk
from errors import BadRequest, Forbidden, NotFound, ParleyError, TooLarge
from rag.chunking import Chunk as Piece
from rag.chunking import chunk_document, validate_document
from rag.embeddings import EmbeddingsClient
from rag.vectors import pack
from server.services.accounts import Principal
from server.services.sessions import SessionService

log = logging.getLogger(__name__)

MAX_TITLE_CHARS = 300
MAX_HEADING_CHARS = 500
HEADING_SEPARATOR = " > "
# Documents prepared at once per node: each holds a core while it runs.
PREPARE_CONCURRENCY = 2


def document_to_wire(document: Document) -> dict[str, Any]:
    return {
        "id": str(document.id),
        "title": document.title,
        "chunks": document.chunks,
        "size_bytes": document.size_bytes,
        "uploaded_by": str(document.uploaded_by) if document.uploaded_by else None,
        "created_at": document.created_at.isoformat(),
    }


def title_from_filename(filename: str | None) -> str:
    """The file's own name, without any directory a browser or client sent along."""
    name = PureWindowsPath(PurePosixPath(filename or "").name).name.strip()
    return name[:MAX_TITLE_CHARS] or "untitled"


def _rows(pieces: list[Piece], vectors: list[list[float]] | None) -> list[NewChunk]:
    return [
        NewChunk(
            ordinal=piece.ordinal,
            heading=HEADING_SEPARATOR.join(piece.heading_path)[:MAX_HEADING_CHARS],
            text=piece.text,
            embedding=pack(vectors[n]) if vectors else None,
        )
        for n, piece in enumerate(pieces)
    ]


class DocumentService:
    def __init__(
        self,
        database: Database,
        sessions: SessionService,
        embeddings: EmbeddingsClient | None,
        *,
        max_bytes: int,
        quota_bytes: int | None = None,
        quota_documents: int | None = None,
    ) -> None:
        self._db = database
        self._sessions = sessions
        self._embeddings = embeddings
        self._max_bytes = max_bytes
        self._quota_bytes = quota_bytes
        self._quota_documents = quota_documents
        self._preparing = asyncio.Semaphore(PREPARE_CONCURRENCY)

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    async def upload_file(
        self,
        principal: Principal,
        session_id: uuid.UUID,
        *,
        filename: str | None,
        data: bytes,
        title: str | None = None,
    ) -> dict[str, Any]:
        """A multipart upload; the title defaults to the file name."""
        await self._sessions.require_member(principal, session_id)
        await self._check_quota(principal, len(data))
        pieces = await self._prepare(data)
        chosen = (title or "").strip() or title_from_filename(filename)
        return await self._store(principal, session_id, chosen, pieces, len(data))

    async def upload_text(
        self, principal: Principal, session_id: uuid.UUID, *, title: str, content: str
    ) -> dict[str, Any]:
        await self._sessions.require_member(principal, session_id)
        title = title.strip()
        if not title:
            raise BadRequest("title must not be empty")
        size = len(content.encode("utf-8", errors="surrogatepass"))
        await self._check_quota(principal, size)
        pieces = await self._prepare(content)
        return await self._store(principal, session_id, title, pieces, size)

    async def list(self, principal: Principal, session_id: uuid.UUID) -> list[dict[str, Any]]:
        await self._sessions.require_member(principal, session_id)
        async with self._db.transaction() as session:
            documents = await documents_repo.list_documents(session, session_id)
        return [document_to_wire(document) for document in documents]

    async def delete(
        self, principal: Principal, session_id: uuid.UUID, document_id: uuid.UUID
    ) -> None:
        """Remove a document and its chunks: the uploader, the session owner or an admin."""
        chat = await self._sessions.require_member(principal, session_id)
        async with self._db.transaction() as session:
            document = await documents_repo.get_document(session, session_id, document_id)
            if document is None:
                raise NotFound("document not found")
            allowed = (
                document.uploaded_by == principal.user_id
                or chat.owner_id == principal.user_id
                or principal.is_admin
            )
            if not allowed:
                raise Forbidden("only the uploader, the session owner or an admin may delete it")
            await documents_repo.delete_document(session, document_id)

    async def _prepare(self, data: bytes | str) -> builtins.list[Piece]:
        """Check and chunk the document in a worker thread (see the module docstring)."""
        async with self._preparing:
            pieces = await asyncio.to_thread(self._check_and_chunk, data)
        if not pieces:
            raise BadRequest("document is empty")
        return pieces

    def _check_and_chunk(self, data: bytes | str) -> builtins.list[Piece]:
        # Looked up at call time, so that tests can watch which thread runs it.
        return chunk_document(validate_document(data, max_bytes=self._max_bytes))

    async def _check_quota(
        self, principal: Principal, size: int, session: Any | None = None
    ) -> None:
        if self._quota_bytes is None and self._quota_documents is None:
            return
        if session is None:
            async with self._db.read() as reader:
                count, used = await documents_repo.uploader_usage(reader, principal.user_id)
        else:
            count, used = await documents_repo.uploader_usage(session, principal.user_id)
        over_bytes = self._quota_bytes is not None and used + size > self._quota_bytes
        over_count = self._quota_documents is not None and count + 1 > self._quota_documents
        if over_bytes or over_count:
            raise TooLarge(
                f"upload quota exceeded: {count} documents and {used} bytes uploaded, "
                f"up to {self._quota_documents} documents and {self._quota_bytes} bytes "
                "allowed; delete some to upload more",
                details={
                    "quota_bytes": self._quota_bytes,
                    "used_bytes": used,
                    "quota_documents": self._quota_documents,
                    "used_documents": count,
                },
            )

    async def _store(
        self,
        principal: Principal,
        session_id: uuid.UUID,
        title: str,
        pieces: builtins.list[Piece],
        size: int,
    ) -> dict[str, Any]:
        vectors = await self._embed([piece.text for piece in pieces])
        # Thousands of rows for a large document, packed vectors included: off the loop.
        chunks = await asyncio.to_thread(_rows, pieces, vectors)
        async with self._db.transaction() as session:
            # Again, next to the insert: another upload may have landed meanwhile.
            await self._check_quota(principal, size, session)
            document = await documents_repo.create_document(
                session,
                session_id=session_id,
                uploaded_by=principal.user_id,
                title=title[:MAX_TITLE_CHARS],
                size_bytes=size,
                chunks=chunks,
            )
        return {
            "id": str(document.id),
            "title": document.title,
            "chunks": document.chunks,
            "created_at": document.created_at.isoformat(),
        }

    async def _embed(self, texts: builtins.list[str]) -> builtins.list[builtins.list[float]] | None:
        if self._embeddings is None:
            return None
        try:
            return await self._embeddings.embed(texts)
        except ParleyError as exc:
            log.warning("document stored without embeddings: %s", exc.message)
            return None
