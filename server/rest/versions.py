"""``/v1/sessions/{id}/messages/{message_id}``: regenerate, edit, switch versions.

The same rules as the WebSocket's ``regenerate``, ``edit`` and ``select_version``
(``server.services.versions``); the new answer streams to the room's members."""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.container import container_of
from server.rest.http import ok, read_body
from server.rest.schemas import MessageEditBody, VersionSelectBody
from server.services.sessions import parse_id
from server.services.versions import VersionChange, VersionService


def _ids(request: Request) -> tuple[uuid.UUID, uuid.UUID]:
    return (
        parse_id(request.path_params["id"]),
        parse_id(request.path_params["message_id"], "message"),
    )


def _service(request: Request) -> VersionService:
    return container_of(request).versions


def _changed(change: VersionChange, status_code: int = 200) -> Response:
    return ok({"message": change.message, "stream_id": change.stream_id}, status_code)


async def regenerate(request: Request) -> Response:
    principal = await container_of(request).authenticate(request)
    session_id, message_id = _ids(request)
    change = await _service(request).regenerate(principal, session_id, message_id)
    return _changed(change, 202)


async def edit(request: Request) -> Response:
    principal = await container_of(request).authenticate(request)
    session_id, message_id = _ids(request)
    body = await read_body(request, MessageEditBody)
    change = await _service(request).edit(principal, session_id, message_id, body.content)
    return _changed(change)


async def select_version(request: Request) -> Response:
    principal = await container_of(request).authenticate(request)
    session_id, message_id = _ids(request)
    body = await read_body(request, VersionSelectBody)
    change = await _service(request).select(principal, session_id, message_id, body.version)
    return _changed(change)


async def list_versions(request: Request) -> Response:
    principal = await container_of(request).authenticate(request)
    session_id, message_id = _ids(request)
    return ok(await _service(request).versions(principal, session_id, message_id))


MESSAGE = "/v1/sessions/{id}/messages/{message_id}"
routes = [
    Route(MESSAGE, edit, methods=["PATCH"]),
    Route(f"{MESSAGE}/regenerate", regenerate, methods=["POST"]),
    Route(f"{MESSAGE}/version", select_version, methods=["PUT"]),
    Route(f"{MESSAGE}/versions", list_versions, methods=["GET"]),
]
