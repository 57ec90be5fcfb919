"""The model catalogue: context lengths, fetched once and cached with a TTL.

The context builder asks for a model's window before every generation, so the
lookup must be cheap: one upstream fetch per TTL, shared by concurrent callers, and a
failed fetch neither raises nor is retried on every call (a short negative TTL).
OpenRouter's catalogue is a large document; no question waits for it but the very
first, and not even that one when the server fetched it at start-up (``warm``): a
stale catalogue keeps answering while a fresh one is fetched behind it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from errors import ParleyError

log = logging.getLogger(__name__)

FetchModels = Callable[[], Awaitable[Mapping[str, int]]]


class ModelCatalog:
    """Context lengths by model id.

    ``override`` (``LLM_CONTEXT_LENGTH``) wins for every model, ``overrides`` per model;
    otherwise the fetched catalogue answers, and an unknown model gives ``None``.
    """

    def __init__(
        self,
        fetch: FetchModels,
        *,
        ttl_s: float = 3600.0,
        failure_ttl_s: float = 60.0,
        override: int | None = None,
        overrides: Mapping[str, int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._ttl_s = ttl_s
        self._failure_ttl_s = failure_ttl_s
        self._override = override
        self._overrides = dict(overrides or {})
        self._clock = clock
        self._lengths: dict[str, int] | None = None
        self._fresh_until = float("-inf")
        self._lock = asyncio.Lock()
        self._behind: asyncio.Task[dict[str, int] | None] | None = None
        self._closed = False

    async def context_length(self, model: str) -> int | None:
        if self._override is not None:
            return self._override
        if model in self._overrides:
            return self._overrides[model]
        lengths = await self._current()
        return None if lengths is None else lengths.get(model)

    async def ready(self) -> None:
        """Wait for a catalogue (fetched once; a stale one is refreshed behind), without
        copying it: for callers that read what the fetch noted beside the lengths."""
        await self._current()

    async def models(self) -> dict[str, int]:
        """Every known model id with its context length (empty when unreachable)."""
        return dict(await self._current() or {})

    def invalidate(self) -> None:
        self._fresh_until = float("-inf")

    async def refresh(self) -> None:
        """Fetch the catalogue now (a model was added upstream, say)."""
        self.invalidate()
        await self._refresh()

    def warm(self) -> None:
        """Fetch the catalogue in the background (at start-up)."""
        if self._override is None:
            self._refresh_behind()

    async def aclose(self) -> None:
        self._closed = True
        if self._behind is not None:
            self._behind.cancel()
            await asyncio.gather(self._behind, return_exceptions=True)

    async def _current(self) -> dict[str, int] | None:
        if self._clock() < self._fresh_until:
            return self._lengths
        if self._lengths is not None:
            self._refresh_behind()
            return self._lengths
        return await self._refresh()

    def _refresh_behind(self) -> None:
        if self._closed:
            return
        if self._behind is None or self._behind.done():
            self._behind = asyncio.create_task(self._refresh(), name="model-catalogue")

    async def _refresh(self) -> dict[str, int] | None:
        async with self._lock:
            # Another caller may have refreshed while this one waited for the lock.
            if self._clock() < self._fresh_until:
                return self._lengths
            try:
                fetched = await self._fetch()
            except Exception as exc:
                # Keep a stale catalogue rather than none; try again after a short pause.
                # (Not only ParleyError: a fetch behind the callers has none to tell.)
                if isinstance(exc, ParleyError):
                    log.warning("model catalogue refresh failed: %s", exc.message)
                else:
                    log.exception("model catalogue refresh failed")
                self._fresh_until = self._clock() + self._failure_ttl_s
                return self._lengths
            self._lengths = dict(fetched)
            self._fresh_until = self._clock() + self._ttl_s
            return self._lengths
