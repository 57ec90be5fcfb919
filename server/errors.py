"""The one exception tree of Parley.

Every failure a client can see is a ``ParleyError``. Each subclass names the wire
``code`` of ``docs/protocol.md`` and the HTTP status REST answers with::

    ParleyError (internal, 500)
    ├── BadRequest      bad_request   400
    ├── Unauthorized    unauthorized  401
    ├── Forbidden       forbidden     403
    ├── NotFound        not_found     404
    ├── Conflict        conflict      409
    ├── TooLarge        too_large     413
    ├── RateLimited     rate_limited  429  (carries retry_after seconds)
    └── Unavailable     unavailable   503  (an upstream is down, limited, timed out
                                            or its circuit is open; may carry retry_after)

Foreign errors (httpx, redis, sqlalchemy, jwt) are converted at the module that
talks to the foreign library, with ``raise ... from exc``; routes and the WebSocket
handler only ever see this tree.
"""

from __future__ import annotations

from typing import Any


class ParleyError(Exception):
    code: str = "internal"
    status: int = 500

    def __init__(
        self,
        message: str = "internal error",
        *,
        details: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.retry_after = retry_after

    def to_wire(self) -> dict[str, Any]:
        """The ``error`` fields shared by REST envelopes and WebSocket frames."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.retry_after is not None:
            body["retry_after"] = round(self.retry_after, 3)
        return body


class BadRequest(ParleyError):
    code, status = "bad_request", 400


class Unauthorized(ParleyError):
    code, status = "unauthorized", 401


class Forbidden(ParleyError):
    code, status = "forbidden", 403


class NotFound(ParleyError):
    code, status = "not_found", 404


class Conflict(ParleyError):
    code, status = "conflict", 409


class TooLarge(ParleyError):
    code, status = "too_large", 413


class RateLimited(ParleyError):
    code, status = "rate_limited", 429


class Unavailable(ParleyError):
    code, status = "unavailable", 503


class InternalError(ParleyError):
    code, status = "internal", 500


ERROR_CODES = (
    "bad_request",
    "unauthorized",
    "forbidden",
    "not_found",
    "conflict",
    "too_large",
    "rate_limited",
    "unavailable",
    "internal",
)
