"""The ASGI application: routes, middleware, error mapping and the lifespan."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from errors import (
    HttpError,
    InternalError,
    MethodNotAllowed,
    NotFound,
    ParleyError,
    TooLarge,
)
from server.bootstrap import build_container
from server.config import Settings, load_settings
from server.metrics import Metrics
from server.rest import (
    api_keys,
    auth,
    budgets,
    documents,
    health,
    memory,
    openai_compat,
    search,
    sessions,
    versions,
)
from server.rest.http import error_response
from server.rest.middleware import (
    BodyLimitMiddleware,
    RequestContextMiddleware,
    SecurityHeadersMiddleware,
)
from server.ws import endpoint as ws_endpoint

log = logging.getLogger("parley")


class ParleyApp(Starlette):
    """Starlette with a fast path for ``/v1/ws``.

    A WebSocket connection lives for hours; every layer of the middleware stack and
    the router keeps a coroutine frame (and some a closure) alive for all that time,
    ~3 KiB per idle connection over ten layers that do nothing for ``/v1/ws`` (the
    request id, the one thing they do, the endpoint sets itself).
    """

    # A coroutine function, so that servers take it for ASGI 3 (uvicorn tells by that).
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == ws_endpoint.WEBSOCKET_PATH:
            scope["app"] = self
            await ws_endpoint.serve_websocket(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or load_settings()
    metrics_holder = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with build_container(settings, metrics_holder) as container:
            app.state.container = container
            if settings.gc_freeze:
                gc.freeze()
            yield

    app = ParleyApp(
        routes=_routes(),
        middleware=[
            # Outermost, so that the 500 the request-id middleware answers carries them too.
            Middleware(SecurityHeadersMiddleware, hsts=True),
            Middleware(RequestContextMiddleware, metrics=metrics_holder),
            Middleware(
                CORSMiddleware,
                allow_origins=settings.allowed_origins,
                allow_credentials=True,
                allow_methods=["GET", "POST", "PATCH", "DELETE"],
                allow_headers=[
                    "Authorization",
                    "Content-Type",
                    "X-Request-ID",
                    "Accept",
                    "X-Parley-Session",
                ],
                expose_headers=["X-Request-ID", "Retry-After", "X-Parley-Session"],
            ),
            Middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes),
        ],
        exception_handlers={
            ParleyError: _parley_error,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
        lifespan=lifespan,
    )
    app.state.settings = settings
    return app


def _routes() -> list[BaseRoute]:
    from server import static
    from server.rest import openapi
    from server.ws import endpoint as ws

    return [
        *health.routes,
        *auth.routes,
        *budgets.routes,
        *sessions.routes,
        *versions.routes,
        *memory.routes,
        *documents.routes,
        *search.routes,
        *api_keys.routes,
        *openai_compat.routes,
        *ws.routes,
        *openapi.routes,
        *static.routes,
    ]


async def _parley_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ParleyError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    mapped: ParleyError
    # A GET of a POST-only API path falls through to the static files at "/", which
    # answer 404: the path exists, so it is a 405 like any other wrong method.
    allowed = _allowed_methods(request) if exc.status_code in (404, 405) else []
    if exc.status_code == 404 and not allowed:
        mapped = NotFound("no such endpoint")
    elif exc.status_code in (404, 405):
        mapped = MethodNotAllowed()
        response = error_response(mapped)
        # Not an API path: the static files, which serve GET and HEAD only.
        response.headers["Allow"] = ", ".join(allowed or ["GET", "HEAD"])
        return response
    elif exc.status_code == 413:
        mapped = TooLarge(str(exc.detail))
    else:
        mapped = HttpError(str(exc.detail), status=exc.status_code)
    return error_response(mapped)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves on this path: one path is often several routes
    (``GET`` and ``PATCH`` of a session), and Starlette's own ``Allow`` names only the
    first route that matched the path."""
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, Route) and route.methods and route.path_regex.match(request.url.path):
            methods |= route.methods
    return sorted(methods)


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(InternalError("internal error"))
