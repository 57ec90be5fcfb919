"""Retries, fallback models and a circuit breaker around a ``ChatProvider``.

For one call, models are tried in order: the request's model, then the fallbacks.
Each model is retried (tenacity, exponential backoff with jitter, honouring
``retry_after``) only while nothing has been yielded: once the first event is out, the
stream is committed to that model and a later failure ends it with
``StreamFinished(error)``. ``BadRequest`` is never retried nor passed to a fallback.

A breaker per upstream (provider name) counts *calls*, not attempts: a call that a
provider failed to answer, after its retries and its fallback models, is one failure;
a call it answered is a success. So a model that is down while its fallback answers
does not open the breaker, and an upstream that answers nothing opens it after
``fail_max`` calls; then calls fail fast with ``Unavailable("circuit open")`` until
``reset_s`` has passed, when one trial call half-opens it.

Models are routed to providers by an optional ``"{provider}:"`` prefix
(``"offline:parley-offline"``); models without a known prefix go to the first provider.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from llm.breaker import UpstreamBreaker
from llm.provider import (
    ChatEvent,
    ChatProvider,
    ChatRequest,
    NoFreeConnection,
    StreamFinished,
    UpstreamUnavailable,
    is_retryable,
)
from server.errors import BadRequest, ParleyError, Unavailable

log = logging.getLogger(__name__)


class ResilientProvider:
    def __init__(
        self,
        providers: ChatProvider | Mapping[str, ChatProvider],
        fallback_models: Sequence[str] = (),
        *,
        max_retries: int = 2,
        breaker_fail_max: int = 5,
        breaker_reset_s: float = 30.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 8.0,
        max_retry_after_s: float = 10.0,
        on_breaker_change: Callable[[str, str], None] | None = None,
    ) -> None:
        if not isinstance(providers, Mapping):
            providers = {providers.name: providers}
        if not providers:
            raise ValueError("ResilientProvider needs at least one provider")
        self._providers = dict(providers)
        self._default = next(iter(self._providers))
        self.name = self._default
        self.fallback_models = list(fallback_models)
        self._max_retries = max_retries
        # Exponential backoff plus up to one initial step of jitter, so that callers
        # failing together do not retry together.
        self._backoff = wait_exponential(
            multiplier=backoff_initial_s, max=backoff_max_s
        ) + wait_random(0, backoff_initial_s)
        self._max_retry_after_s = max_retry_after_s
        self.breakers = {
            name: UpstreamBreaker(name, breaker_fail_max, breaker_reset_s, on_breaker_change)
            for name in self._providers
        }

    def breaker_states(self) -> dict[str, str]:
        """``closed``, ``open`` or ``half-open`` per upstream (for metrics and readyz)."""
        return {name: breaker.state for name, breaker in self.breakers.items()}

    def route(self, model: str) -> tuple[str, str]:
        """The provider name and the model id that provider knows."""
        prefix, sep, rest = model.partition(":")
        if sep and prefix in self._providers:
            return prefix, rest
        return self._default, model

    def models_for(self, request: ChatRequest, fallbacks: Sequence[str] | None) -> list[str]:
        chain = [request.model, *(self.fallback_models if fallbacks is None else fallbacks)]
        return list(dict.fromkeys(chain))

    # -- streaming ---------------------------------------------------------------

    async def stream(
        self, request: ChatRequest, *, fallbacks: Sequence[str] | None = None
    ) -> AsyncGenerator[ChatEvent, None]:
        call = _Call(self)
        try:
            for model in self.models_for(request, fallbacks):
                name, upstream_model = self.route(model)
                if not call.admit(name):
                    continue
                provider = self._providers[name]
                attempt_request = replace(request, model=upstream_model)
                try:
                    inner, first = await self._open(provider, attempt_request)
                except BadRequest:
                    call.answered(name)
                    raise
                except NoFreeConnection:
                    raise  # this node's limit: no model would do better
                except Unavailable as exc:
                    call.failed(name, exc)
                    continue
                call.answered(name)
                try:
                    event: ChatEvent = first
                    while True:
                        if isinstance(event, StreamFinished):
                            if event.finish_reason == "error":
                                self.breakers[name].record_failure(event.error or Unavailable())
                            yield replace(event, model=model)
                            return
                        yield event
                        try:
                            event = await anext(inner)
                        except StopAsyncIteration:
                            return
                finally:
                    await inner.aclose()
            raise call.final_error()
        finally:
            call.settle()

    async def _open(
        self, provider: ChatProvider, request: ChatRequest
    ) -> tuple[AsyncGenerator[ChatEvent, None], ChatEvent]:
        """Start a stream and wait for its first event, retrying failures before it."""
        async for attempt in self._retrying():
            with attempt:
                inner = provider.stream(request)
                try:
                    first = await anext(inner)
                except StopAsyncIteration as exc:
                    await inner.aclose()
                    raise UpstreamUnavailable("the model sent an empty stream") from exc
                except BaseException:
                    await inner.aclose()
                    raise
                return inner, first
        raise AssertionError("unreachable: tenacity reraises the last failure")

    # -- one-shot ----------------------------------------------------------------

    async def complete(
        self, request: ChatRequest, *, fallbacks: Sequence[str] | None = None
    ) -> str:
        call = _Call(self)
        try:
            for model in self.models_for(request, fallbacks):
                name, upstream_model = self.route(model)
                if not call.admit(name):
                    continue
                provider = self._providers[name]
                try:
                    async for attempt in self._retrying():
                        with attempt:
                            text = await provider.complete(replace(request, model=upstream_model))
                except BadRequest:
                    call.answered(name)
                    raise
                except NoFreeConnection:
                    raise
                except Unavailable as exc:
                    call.failed(name, exc)
                    continue
                call.answered(name)
                return text
            raise call.final_error()
        finally:
            call.settle()

    def _retrying(self) -> AsyncRetrying:
        return AsyncRetrying(
            stop=stop_after_attempt(self._max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception(self._should_retry),
            reraise=True,
            before_sleep=_log_retry,
        )

    def _should_retry(self, exc: BaseException) -> bool:
        if not is_retryable(exc):
            return False
        retry_after = getattr(exc, "retry_after", None)
        # A long Retry-After is better spent on a fallback model than waiting.
        return retry_after is None or retry_after <= self._max_retry_after_s

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return float(retry_after)
        return float(self._backoff(state))

    # -- the rest of the protocol ----------------------------------------------------

    async def context_length(self, model: str) -> int | None:
        name, upstream_model = self.route(model)
        return await self._providers[name].context_length(upstream_model)

    async def supports_tools(self, model: str) -> bool:
        name, upstream_model = self.route(model)
        probe = getattr(self._providers[name], "supports_tools", None)
        return bool(probe is not None and await probe(upstream_model))

    def warm(self) -> None:
        """Start what each upstream can do ahead of its first question."""
        for provider in self._providers.values():
            warm = getattr(provider, "warm", None)
            if warm is not None:
                warm()

    def provider(self, name: str | None = None) -> ChatProvider:
        return self._providers[name or self._default]

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()


class _Call:
    """The breaker bookkeeping of one call across its models."""

    def __init__(self, owner: ResilientProvider) -> None:
        self._breakers = owner.breakers
        self._admitted: set[str] = set()
        self._answered: set[str] = set()
        self._failures: dict[str, ParleyError] = {}
        self._last: ParleyError | None = None

    def admit(self, name: str) -> bool:
        if name in self._admitted:
            return True
        try:
            self._breakers[name].admit()
        except Unavailable as exc:
            self._last = exc
            return False
        self._admitted.add(name)
        return True

    def failed(self, name: str, exc: ParleyError) -> None:
        log.warning("model attempt failed on %s: %s", name, exc.message)
        self._failures[name] = exc
        self._last = exc

    def answered(self, name: str) -> None:
        if name not in self._answered:
            self._answered.add(name)
            self._breakers[name].record_success()

    def final_error(self) -> ParleyError:
        return self._last or Unavailable("no model is configured")

    def settle(self) -> None:
        for name in self._admitted - self._answered:
            if name in self._failures:
                self._breakers[name].record_failure(self._failures[name])
            else:
                # Cancelled before the upstream said anything: no verdict either way.
                self._breakers[name].release()


def _log_retry(state: RetryCallState) -> None:
    exc: Any = state.outcome.exception() if state.outcome else None
    log.info(
        "retrying the model after attempt %d: %s",
        state.attempt_number,
        getattr(exc, "message", exc),
    )
