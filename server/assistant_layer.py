"""Starts the assistant: the model provider (OpenRouter or offline), wrapped in
retries, fallbacks and a circuit breaker, and the generation runner."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable

import httpx
import orjson

from llm import tokens
from llm.offline import OfflineProvider
from llm.provider import ChatProvider
from llm.resilience import ResilientProvider
from realtime import envelope as kinds
from realtime.envelope import Envelope
from server.assistant.context import ContextAssembler
from server.assistant.generation import Assistant
from server.assistant.takeover import StreamTakeover
from server.assistant.turn_cache import TurnCache, turn_of
from server.container import Container
from server.rest.sse import SSEStreamer


def build_provider(container: Container, client: httpx.AsyncClient) -> ResilientProvider:
    settings = container.settings
    upstream: ChatProvider
    if settings.openrouter_api_key is not None:
        from llm.openrouter import OpenRouterProvider

        upstream = OpenRouterProvider(
            client,
            settings.openrouter_base_url,
            settings.openrouter_api_key.get_secret_value(),
            referer=settings.openrouter_referer,
            title=settings.openrouter_title,
            connect_timeout_s=settings.llm_connect_timeout_s,
            first_token_timeout_s=settings.llm_first_token_timeout_s,
            idle_timeout_s=settings.llm_idle_timeout_s,
            total_timeout_s=settings.llm_total_timeout_s,
            context_length_override=settings.llm_context_length,
        )
    else:
        upstream = OfflineProvider(
            settings.offline_token_delay_s, context_length=settings.llm_context_length or 8192
        )
    metrics = container.metrics

    def on_breaker_change(name: str, state: str) -> None:
        metrics.breaker_state.labels(name).set(1 if state == "open" else 0)

    return ResilientProvider(
        upstream,
        settings.llm_fallback_models,
        max_retries=settings.llm_max_retries,
        breaker_fail_max=settings.llm_breaker_fail_max,
        breaker_reset_s=settings.llm_breaker_reset_s,
        first_token_deadline_s=settings.llm_first_token_deadline_s,
        on_breaker_change=on_breaker_change,
    )


async def start_assistant(container: Container, stack: contextlib.AsyncExitStack) -> None:
    client = container.extras.get("http_client")
    if client is None:
        client = httpx.AsyncClient()
        stack.push_async_callback(client.aclose)
        container.extras["http_client"] = client
    provider = build_provider(container, client)
    stack.push_async_callback(provider.aclose)
    provider.warm()
    # Loading the tokenizer takes about 140 ms: here, before the heap is frozen
    # (``GC_FREEZE``), rather than in front of this node's first answer.
    await asyncio.to_thread(tokens.encoding)
    hub = container.extras["hub"]
    context = ContextAssembler(container.database, provider, container.settings, container.extras)
    assistant = Assistant(
        database=container.database,
        hub=hub,
        provider=provider,
        context=context,
        settings=container.settings,
        metrics=container.metrics,
        extras=container.extras,
    )
    # Runs before the hub closes (the stack unwinds in reverse): deltas of draining
    # generations still reach members on other nodes.
    stack.push_async_callback(assistant.drain, container.settings.drain_timeout_s)
    # ... and before that, posts whose connections were closed finish landing, so the
    # answers they confirm are among those drained.
    stack.push_async_callback(container.messages.landed, container.settings.drain_timeout_s)
    container.messages.assistant = assistant
    takeover = StreamTakeover(container.database, hub, context.turns, container.metrics)
    container.extras["presence"].on_node_gone = takeover.node_gone
    container.messages.turns = context.turns
    container.sessions.access_changed = context.turns.drop
    hub.on_released = remember_stored_messages(context.turns)
    container.extras.update(
        llm=provider, generations=assistant, assistant=assistant, sse=SSEStreamer(container, hub)
    )
    container.extras.setdefault("readiness", {})["llm"] = lambda: (
        "ok" if "open" not in provider.breaker_states().values() else "circuit open"
    )


def remember_stored_messages(turns: TurnCache) -> Callable[[Envelope], None]:
    """Extend this node's copies of recent turns with messages stored on other nodes
    (questions, and answers in their ``stream.end``), so that a conversation whose
    members sit on different nodes keeps starting answers from the copy."""

    def on_released(env: Envelope) -> None:
        if env.seq is None or env.kind not in (kinds.MESSAGE, kinds.STREAM):
            return
        session_id = uuid.UUID(env.session_id)
        # Most releases need no decoding: the message is this node's own (the copy has
        # it), or the session has no copy here.
        if not turns.expects(session_id, env.seq):
            return
        message = orjson.loads(env.frame).get("message")
        if message:
            turns.appended(session_id, turn_of(message), None, None)

    return on_released
