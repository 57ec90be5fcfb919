"""Retries, fallback models and a circuit breaker around a ``ChatProvider``.

For one call, models are tried in order: the request's model, then the fallbacks.
Each model is retried (tenacity, exponential backoff with jitter, honouring
``retry_after``) only while nothing has been yielded: once the first event is out, the
stream is committed to that model and a later failure ends it with
``StreamFinished(error)``. ``BadRequest`` is never retried nor passed to a fallback.

Before the first event, the whole sequence of attempts (retries, their backoff and
the fallback models) shares one deadline, ``first_token_deadline_s``: each attempt
waits for its first event at most what is left of it (and at most the provider's own
first-token timeout), and no backoff sleeps past it. So a hung upstream reaches the
user as ``Unavailable`` within that deadline, whatever the retries and fallbacks.

A breaker per upstream (provider name) counts *calls*, not attempts: a call that a
provider failed to answer, after its retries and its fallback models, is one failure;
so is a stream that fails after its first event (an error chunk, a dropped
connection, a stall); a stream that finishes is a success. So a model that is down
while its fallback answers does not open the breaker, and an upstream that answers
nothing, or breaks every answer half-way, opens it after ``fail_max`` calls; then
calls fail fast with ``Unavailable("circuit open")`` until ``reset_s`` has passed,
when one trial call (the probe) half-opens it. Calls arriving during the probe wait
for it (within their own deadline): its first event closes the circuit and lets them
all through; its failure re-opens the circuit and they fail fast.

Models are routed to providers by an optional ``"{provider}:"`` prefix
(``"offline:parley-offline"``); models without a known prefix go to the first provider.
"""

from __future__ import annotations

import asyncio
import logging
import time
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
from tenacity.stop import StopBaseT

from errors import BadRequest, ParleyError, Unavailable
from llm.breaker import Clock, UpstreamBreaker
from llm.provider import (
    ChatEvent,
    ChatProvider,
    ChatRequest,
    NoFreeConnection,
    StreamFinished,
    UpstreamUnavailable,
    is_retryable,
)

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
        first_token_deadline_s: float = 30.0,
        on_breaker_change: Callable[[str, str], None] | None = None,
        clock: Clock = time.monotonic,
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
        self.first_token_deadline_s = first_token_deadline_s
        self.breakers = {
            name: UpstreamBreaker(
                name, breaker_fail_max, breaker_reset_s, on_breaker_change, clock=clock
            )
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
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.first_token_deadline_s
        try:
            for index, model in enumerate(self.models_for(request, fallbacks)):
                if loop.time() >= deadline:
                    break
                name, upstream_model = self.route(model)
                if not await call.admit(name, deadline - loop.time()):
                    continue
                provider = self._providers[name]
                attempt_request = replace(
                    request, model=upstream_model, purpose=_purpose(request, index)
                )
                try:
                    inner, first = await self._open(provider, attempt_request, deadline)
                except BadRequest:
                    call.finished(name, None)
                    raise
                except NoFreeConnection:
                    raise  # this node's limit: no model would do better
                except Unavailable as exc:
                    call.failed(name, exc)
                    continue
                call.started(name)
                try:
                    event: ChatEvent = first
                    while True:
                        if isinstance(event, StreamFinished):
                            error = event.error or Unavailable("the model failed while answering")
                            call.finished(name, error if event.finish_reason == "error" else None)
                            yield replace(event, model=model)
                            return
                        yield event
                        try:
                            event = await anext(inner)
                        except StopAsyncIteration:
                            call.finished(name, None)
                            return
                        except ParleyError as exc:
                            # Providers end a broken stream with StreamFinished; one that
                            # raises instead has failed all the same.
                            call.finished(name, exc)
                            raise
                finally:
                    await inner.aclose()
            raise call.final_error()
        finally:
            call.settle()

    async def _open(
        self, provider: ChatProvider, request: ChatRequest, deadline: float
    ) -> tuple[AsyncGenerator[ChatEvent, None], ChatEvent]:
        """Start a stream and wait for its first event, retrying failures before it,
        all before ``deadline`` (event loop time)."""
        async for attempt in self._retrying(deadline):
            with attempt:
                inner = provider.stream(_attempt(request, attempt.retry_state.attempt_number))
                try:
                    async with asyncio.timeout_at(deadline):
                        first = await anext(inner)
                except StopAsyncIteration as exc:
                    await inner.aclose()
                    raise UpstreamUnavailable("the model sent an empty stream") from exc
                except TimeoutError as exc:
                    await inner.aclose()
                    raise UpstreamUnavailable(
                        "the model did not start answering within "
                        f"{self.first_token_deadline_s:g} s",
                        retryable=False,
                    ) from exc
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
            for index, model in enumerate(self.models_for(request, fallbacks)):
                name, upstream_model = self.route(model)
                if not await call.admit(name, self.first_token_deadline_s):
                    continue
                provider = self._providers[name]
                attempt_request = replace(
                    request, model=upstream_model, purpose=_purpose(request, index)
                )
                try:
                    async for attempt in self._retrying(None):
                        with attempt:
                            number = attempt.retry_state.attempt_number
                            text = await provider.complete(_attempt(attempt_request, number))
                except BadRequest:
                    call.finished(name, None)
                    raise
                except NoFreeConnection:
                    raise
                except Unavailable as exc:
                    call.failed(name, exc)
                    continue
                call.finished(name, None)
                return text
            raise call.final_error()
        finally:
            call.settle()

    def _retrying(self, deadline: float | None) -> AsyncRetrying:
        attempts = stop_after_attempt(self._max_retries + 1)
        stop: StopBaseT = attempts
        if deadline is not None:
            loop = asyncio.get_running_loop()

            def past_deadline(state: RetryCallState) -> bool:
                # A retry that could only start after the deadline is not made.
                return bool(attempts(state)) or loop.time() + state.upcoming_sleep >= deadline

            stop = past_deadline
        return AsyncRetrying(
            stop=stop,
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
        # Per admitted upstream: the probe token while this call is a half-open
        # circuit's trial and has no verdict yet, else None.
        self._admitted: dict[str, object | None] = {}
        self._finished: set[str] = set()
        self._failures: dict[str, ParleyError] = {}
        self._last: ParleyError | None = None

    async def admit(self, name: str, wait_s: float) -> bool:
        if name in self._admitted:
            return True
        try:
            trial = await self._breakers[name].admit(max(0.0, wait_s))
        except Unavailable as exc:
            self._last = exc
            return False
        self._admitted[name] = trial
        return True

    def failed(self, name: str, exc: ParleyError) -> None:
        """An attempt on ``name`` failed before its first event."""
        log.warning("model attempt failed on %s: %s", name, exc.message)
        self._failures[name] = exc
        self._last = exc

    def started(self, name: str) -> None:
        """The first event arrived: the upstream is answering. A probe's first event
        closes the circuit at once, so that callers waiting on it go ahead; the stream's
        end gives the verdict that counts for a closed circuit."""
        self._failures.pop(name, None)
        if self._admitted.get(name) is not None:
            self._admitted[name] = None
            self._breakers[name].record_success()

    def finished(self, name: str, error: ParleyError | None) -> None:
        """The verdict on ``name``: answered in full (``None``) or broken mid-stream."""
        if name in self._finished:
            return
        self._finished.add(name)
        self._admitted[name] = None
        if error is None:
            self._breakers[name].record_success()
        else:
            log.warning("the model's stream broke on %s: %s", name, error.message)
            self._breakers[name].record_failure(error)

    def final_error(self) -> ParleyError:
        return self._last or Unavailable("no model is configured")

    def settle(self) -> None:
        for name, trial in self._admitted.items():
            if name in self._finished:
                continue
            if name in self._failures:
                self._breakers[name].record_failure(self._failures[name])
            else:
                # Cancelled or closed by the caller without a verdict either way.
                self._breakers[name].release(trial)


def _purpose(request: ChatRequest, model_index: int) -> str | None:
    """A fallback model's request is counted as one (``llm.metering``)."""
    return "fallback" if model_index else request.purpose


def _attempt(request: ChatRequest, number: int) -> ChatRequest:
    """The request of attempt ``number``: after the first, it is counted as a retry."""
    return request if number == 1 else replace(request, purpose="retry")


def _log_retry(state: RetryCallState) -> None:
    exc: Any = state.outcome.exception() if state.outcome else None
    log.info(
        "retrying the model after attempt %d: %s",
        state.attempt_number,
        getattr(exc, "message", exc),
    )
