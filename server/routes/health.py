"""Liveness, readiness and metrics."""

from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.container import container_of
from server.errors import ParleyError, Unauthorized
from server.http import JSONResponse, ok


async def healthz(request: Request) -> Response:
    return ok({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready when the database and Redis answer and no upstream's circuit is open."""
    container = container_of(request)
    checks: dict[str, str] = {}
    try:
        await container.database.ping()
        checks["database"] = "ok"
    except ParleyError as exc:
        checks["database"] = exc.message
    if container.redis is not None:
        try:
            await container.redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"unreachable: {type(exc).__name__}"
    for name, probe in container.extras.get("readiness", {}).items():
        checks[name] = probe()
    ready = all(value == "ok" for value in checks.values())
    body = {"success": ready, "data": {"ready": ready, "checks": checks}}
    if not ready:
        body["error"] = {"code": "unavailable", "message": "not ready", "details": checks}
    return JSONResponse(body, status_code=200 if ready else 503)


async def metrics(request: Request) -> Response:
    container = container_of(request)
    expected = container.settings.metrics_token
    if expected is not None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        # Constant time: the token is compared byte by byte otherwise.
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), expected.get_secret_value().encode()
        ):
            raise Unauthorized("the metrics need 'Authorization: Bearer <METRICS_TOKEN>'")
    return Response(
        container.metrics.render(),
        media_type="text/plain; version=0.0.4; charset=utf-8",
    )


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
