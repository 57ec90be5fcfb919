"""The model provider: OpenRouter with an API key, else the offline model; either way
wrapped in retries, fallbacks and a circuit breaker (``llm.resilience``)."""

from __future__ import annotations

import httpx

from llm.metering import Meter, MeteredProvider
from llm.offline import OfflineProvider
from llm.provider import ChatProvider
from llm.resilience import ResilientProvider
from server.config import Settings
from server.metrics import Metrics


def make_provider(
    settings: Settings, metrics: Metrics, client: httpx.AsyncClient, meter: Meter
) -> ResilientProvider:
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
    # Inside the resilient wrapper: every attempt is admitted against the payer's
    # budget and counted (retries and fallbacks too).
    upstream = MeteredProvider(upstream, meter)

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
