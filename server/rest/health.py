"""Liveness, readiness and metrics."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from errors import ParleyError, Unauthorized
from server.container import Container, container_of
from server.rest.http import JSONResponse, ok


async def healthz(request: Request) -> Response:
    return ok({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready when the database and Redis answer and no upstream's circuit is open.

    Answers within ``READINESS_TIMEOUT_S`` whatever the database or Redis do: a check
    that has not answered by then reports so (a load balancer polling a partitioned
    node must hear "not ready" in time, not time out itself). A check still running is
    not started again by the next request, which waits on the same one: probes do not
    pile up connections during an outage.
    """
    container = container_of(request)
    probes: dict[str, Callable[[], Awaitable[Any]]] = {"database": container.database.ping}
    if container.redis is not None:
        probes["redis"] = container.redis.ping
    running = {name: _probe(container, name, probe) for name, probe in probes.items()}
    await asyncio.wait(running.values(), timeout=container.settings.readiness_timeout_s)
    checks: dict[str, str] = {}
    for name, task in running.items():
        if not task.done():
            checks[name] = "not answering"
        elif (error := task.exception()) is None:
            checks[name] = "ok"
        elif isinstance(error, ParleyError):
            checks[name] = error.message
        else:
            checks[name] = f"unreachable: {type(error).__name__}"
    for name, probe in container.readiness.items():
        checks[name] = probe()
    ready = all(value == "ok" for value in checks.values())
    body = {"success": ready, "data": {"ready": ready, "checks": checks}}
    if not ready:
        body["error"] = {"code": "unavailable", "message": "not ready", "details": checks}
    return JSONResponse(body, status_code=200 if ready else 503)


def _probe(
    container: Container, name: str, probe: Callable[[], Awaitable[Any]]
) -> asyncio.Task[Any]:
    """The check ``name`` running now, or a new one. It runs to its own end (bounded by
    the database's and Redis's timeouts), whoever stopped waiting for it."""
    in_flight = container.readiness_in_flight
    task = in_flight.get(name)
    if task is None:

        async def run() -> Any:
            return await probe()

        task = in_flight[name] = asyncio.create_task(run(), name=f"readiness-{name}")

        def done(finished: asyncio.Task[Any]) -> None:
            if in_flight.get(name) is finished:
                del in_flight[name]
            if not finished.cancelled():
                finished.exception()  # retrieved: read by whichever request waited

        task.add_done_callback(done)
    return task


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
