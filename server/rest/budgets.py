"""``/v1/users/{id}/budget`` (admin) and ``/v1/me/usage``: budgets and what was spent."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.container import container_of
from server.rest.http import ok, read_body
from server.rest.schemas import BudgetPatchBody
from server.services.sessions import parse_id


async def my_usage(request: Request) -> Response:
    container = container_of(request)
    principal = await container.authenticate(request)
    return ok(await container.budgets.usage(principal.user_id))


async def get_budget(request: Request) -> Response:
    container = container_of(request)
    principal = await container.authenticate(request)
    user_id = parse_id(request.path_params["id"], "user")
    return ok(await container.budgets.describe(principal, user_id))


async def patch_budget(request: Request) -> Response:
    container = container_of(request)
    principal = await container.authenticate(request)
    user_id = parse_id(request.path_params["id"], "user")
    body = await read_body(request, BudgetPatchBody)
    changes = body.model_dump(include=body.model_fields_set)
    return ok(await container.budgets.set_limits(principal, user_id, changes))


async def delete_budget(request: Request) -> Response:
    container = container_of(request)
    principal = await container.authenticate(request)
    user_id = parse_id(request.path_params["id"], "user")
    return ok(await container.budgets.clear_limits(principal, user_id))


routes = [
    Route("/v1/me/usage", my_usage, methods=["GET"]),
    Route("/v1/users/{id}/budget", get_budget, methods=["GET"]),
    Route("/v1/users/{id}/budget", patch_budget, methods=["PATCH"]),
    Route("/v1/users/{id}/budget", delete_budget, methods=["DELETE"]),
]
