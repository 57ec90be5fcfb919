"""The REST envelope, body parsing with pydantic, and who is calling."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from errors import BadRequest, ParleyError, Unauthorized
from server.logging import request_id_var

Body = TypeVar("Body", bound=BaseModel)


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def ok(data: Any, status_code: int = 200) -> JSONResponse:
    return JSONResponse({"success": True, "data": data}, status_code=status_code)


def error_body(exc: ParleyError) -> dict[str, Any]:
    error: dict[str, Any] = {
        "code": exc.code,
        "message": exc.message,
        "details": exc.details,
        "timestamp": datetime.now(UTC).isoformat(),
        "request_id": request_id_var.get(),
    }
    if exc.retry_after is not None:
        error["retry_after"] = round(exc.retry_after, 3)
    return {"success": False, "error": error}


def error_response(exc: ParleyError) -> JSONResponse:
    response = JSONResponse(error_body(exc), status_code=exc.status)
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="parley"'
    return response


async def read_body(request: Request, model: type[Body]) -> Body:
    raw = await request.body()
    if not raw:
        raise BadRequest("a JSON body is required")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc.msg}") from None
    return validate(model, data)


def validate(model: type[Body], data: Any) -> Body:
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        details = [
            {"field": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]}
            for e in exc.errors(include_url=False, include_input=False)
        ]
        first = details[0]
        raise BadRequest(f"{first['field']}: {first['problem']}", details=details) from None


# Query integers are stored and compared as signed 64-bit numbers (PostgreSQL BIGINT,
# SQLite INTEGER): anything wider is refused here rather than overflowing a driver.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def query_int(request: Request, name: str, default: int | None = None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer") from None
    if not INT64_MIN <= value <= INT64_MAX:
        raise BadRequest(f"{name} must be a 64-bit integer")
    return value


def bearer_or_cookie(connection: HTTPConnection) -> tuple[str | None, str | None]:
    """The access token and where it came from: ``"bearer"``, ``"cookie"`` or None."""
    header = connection.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("the Authorization header must be 'Bearer <token>'")
        return token.strip(), "bearer"
    cookie = connection.cookies.get("jwt")
    if cookie:
        return cookie, "cookie"
    return None, None


def client_ip(connection: HTTPConnection) -> str:
    return connection.client.host if connection.client else "unknown"
