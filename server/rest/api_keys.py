"""``/v1/me/api-keys``: a user's keys for the OpenAI-compatible front door.

Managed with a session token only (``container.authenticate``): a key cannot mint,
list or revoke keys, so a leaked one gives no more than the front door.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.container import container_of
from server.rest.http import ok, read_body
from server.rest.schemas import ApiKeyCreateBody
from server.services.sessions import parse_id


async def create_key(request: Request) -> Response:
    container = container_of(request)
    principal = await container.authenticate(request)
    body = await read_body(request, ApiKeyCreateBody)
    return ok(await container.api_keys.create(principal, body.name), 201)


async def list_keys(request: Request) -> Response:
    container = container_of(request)
    principal = await container.authenticate(request)
    return ok({"api_keys": await container.api_keys.list_for(principal)})


async def revoke_key(request: Request) -> Response:
    container = container_of(request)
    principal = await container.authenticate(request)
    await container.api_keys.revoke(principal, parse_id(request.path_params["id"], "API key"))
    return ok({"revoked": True})


routes = [
    Route("/v1/me/api-keys", create_key, methods=["POST"]),
    Route("/v1/me/api-keys", list_keys, methods=["GET"]),
    Route("/v1/me/api-keys/{id}", revoke_key, methods=["DELETE"]),
]
