"""``/v1/me/memory``: what the assistant keeps about the caller."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.container import container_of
from server.rest.http import ok, read_body
from server.rest.schemas import MemoryAddBody
from server.services.memory import MemoryService


def _memory(request: Request) -> MemoryService:
    return container_of(request).memory


async def list_memory(request: Request) -> Response:
    principal = await container_of(request).authenticate(request)
    return ok({"items": await _memory(request).list(principal)})


async def add_memory(request: Request) -> Response:
    principal = await container_of(request).authenticate(request)
    body = await read_body(request, MemoryAddBody)
    return ok(await _memory(request).add(principal, content=body.content, kind=body.kind), 201)


async def forget_memory_item(request: Request) -> Response:
    principal = await container_of(request).authenticate(request)
    await _memory(request).forget(principal, request.path_params["item_id"])
    return ok({"removed": 1})


async def forget_all_memory(request: Request) -> Response:
    principal = await container_of(request).authenticate(request)
    return ok({"removed": await _memory(request).forget_all(principal)})


routes = [
    Route("/v1/me/memory", list_memory, methods=["GET"]),
    Route("/v1/me/memory", add_memory, methods=["POST"]),
    Route("/v1/me/memory", forget_all_memory, methods=["DELETE"]),
    Route("/v1/me/memory/{item_id}", forget_memory_item, methods=["DELETE"]),
]
