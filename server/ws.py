"""The WebSocket endpoint ``/v1/ws`` (wired to the realtime hub)."""

from __future__ import annotations

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
