"""Origin checks for cookie-authenticated requests (cross-site WebSocket hijacking)."""

from __future__ import annotations

from collections.abc import Iterable

from starlette.requests import HTTPConnection


def own_origin(connection: HTTPConnection) -> str:
    scheme = {"ws": "http", "wss": "https"}.get(connection.url.scheme, connection.url.scheme)
    host = connection.headers.get("host", "")
    return f"{scheme}://{host}".lower()


def origin_allowed(
    connection: HTTPConnection, allowed: Iterable[str], public_url: str | None = None
) -> bool:
    origin = connection.headers.get("origin")
    if not origin:
        return False
    origin = origin.rstrip("/").lower()
    accepted = {own_origin(connection), *(a.rstrip("/").lower() for a in allowed)}
    if public_url:
        accepted.add(public_url.rstrip("/").lower())
    return origin in accepted or "*" in accepted
