"""``/v1/sessions/{id}/documents``: what the session's assistant retrieves from.

``POST`` takes multipart/form-data with a ``file`` (and an optional ``title``), or
JSON ``{title, content}``.
"""

from __future__ import annotations

import uuid
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from errors import BadRequest
from server.container import container_of
from server.rest.http import ok, read_body
from server.rest.schemas import DocumentJsonBody
from server.services.accounts import Principal
from server.services.documents import DocumentService
from server.services.sessions import parse_id


def _documents(request: Request) -> DocumentService:
    return container_of(request).documents


async def upload_document(request: Request) -> Response:
    principal = await container_of(request).authenticate(request)
    session_id = parse_id(request.path_params["id"])
    documents = _documents(request)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        created = await _upload_multipart(request, documents, principal, session_id)
    else:
        body = await read_body(request, DocumentJsonBody)
        created = await documents.upload_text(
            principal, session_id, title=body.title, content=body.content
        )
    return ok(created, 201)


async def _upload_multipart(
    request: Request, documents: DocumentService, principal: Principal, session_id: uuid.UUID
) -> dict[str, Any]:
    async with request.form(max_files=1, max_fields=4) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise BadRequest("the multipart body needs a 'file' part")
        title = form.get("title")
        # One byte over the limit is enough to know it is too large.
        data = await upload.read(documents.max_bytes + 1)
        return await documents.upload_file(
            principal,
            session_id,
            filename=upload.filename,
            data=data,
            title=title if isinstance(title, str) else None,
        )


async def list_documents(request: Request) -> Response:
    principal = await container_of(request).authenticate(request)
    session_id = parse_id(request.path_params["id"])
    return ok({"documents": await _documents(request).list(principal, session_id)})


async def delete_document(request: Request) -> Response:
    principal = await container_of(request).authenticate(request)
    session_id = parse_id(request.path_params["id"])
    document_id = parse_id(request.path_params["doc_id"], "document")
    await _documents(request).delete(principal, session_id, document_id)
    return ok({"removed": True})


routes = [
    Route("/v1/sessions/{id}/documents", upload_document, methods=["POST"]),
    Route("/v1/sessions/{id}/documents", list_documents, methods=["GET"]),
    Route("/v1/sessions/{id}/documents/{doc_id}", delete_document, methods=["DELETE"]),
]
