"""The REST calls of ``parley chat``: log in, refresh, sessions; the envelope unwrapped
and httpx's errors turned into ``ParleyError`` at this boundary."""

from __future__ import annotations

from typing import Any

import httpx

from errors import ERROR_CLASSES, InternalError, ParleyError, Unavailable

ERRORS_BY_CODE: dict[str, type[ParleyError]] = {cls.code: cls for cls in ERROR_CLASSES}


class Rest:
    """The few REST calls the client needs, with the envelope unwrapped and httpx's
    errors turned into ``ParleyError`` at this boundary."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(30.0))
        self.token: str | None = None
        self.refresh_token: str | None = None

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            response = await self.http.request(method, path, json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise Unavailable(f"cannot reach the server: {exc}") from exc
        try:
            payload = response.json()
        except ValueError as exc:
            raise InternalError(f"HTTP {response.status_code}: not JSON") from exc
        if response.is_success and payload.get("success"):
            return payload["data"]
        error = payload.get("error") or {}
        cls = ERRORS_BY_CODE.get(error.get("code", ""), InternalError)
        raise cls(error.get("message") or f"HTTP {response.status_code}")

    async def login(self, email: str, password: str) -> dict[str, Any]:
        data = await self.call("POST", "/v1/auth/login", {"email": email, "password": password})
        self.token, self.refresh_token = data["access_token"], data.get("refresh_token")
        return dict(data["user"])

    async def refresh(self) -> bool:
        """A new access token from the refresh token (password logins only)."""
        if self.refresh_token is None:
            return False
        data = await self.call("POST", "/v1/auth/refresh", {"refresh_token": self.refresh_token})
        self.token, self.refresh_token = data["access_token"], data.get("refresh_token")
        return True

    async def aclose(self) -> None:
        await self.http.aclose()
