"""Starts the context layer: web search, per-user memory, documents and retrieval.

Registered in ``server.bootstrap.STARTERS``. Picks each implementation from the
settings (Tavily only with ``TAVILY_API_KEY``, embeddings only with
``EMBEDDINGS_URL``, Redis caches only with ``REDIS_URL``) and publishes the services
in ``container.extras``:

- ``"http_client"``: the process' shared ``httpx.AsyncClient`` (made here when no
  earlier layer made one, and closed with the stack);
- ``"web_search"``: ``search.service.WebSearch``;
- ``"memory"``: ``server.services.memory.MemoryService``;
- ``"documents"``: ``server.services.documents.DocumentService``;
- ``"retriever"``: ``rag.retrieval.Retriever``;
- ``"embeddings"``: ``rag.embeddings.EmbeddingsClient`` or None;
- ``"readiness"["tavily"]``: ``"ok"`` or ``"circuit open"``, when Tavily is configured.
"""

from __future__ import annotations

import contextlib

import httpx

from memory.cache import MemoryUserContextCache, RedisUserContextCache, UserContextCache
from rag.embeddings import EmbeddingsClient
from rag.retrieval import Retriever
from realtime.keys import DEFAULT_KEYS, USER_CONTEXT_TTL_S
from search.cache import MemorySearchCache, RedisSearchCache, SearchCache
from search.service import WebSearch
from search.tavily import TavilyClient
from server.container import Container
from server.services.documents import DocumentService
from server.services.memory import MemoryService

HTTP_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


async def start_context(container: Container, stack: contextlib.AsyncExitStack) -> None:
    settings = container.settings
    http = container.extras.get("http_client")
    if http is None:
        limits = httpx.Limits(
            max_connections=settings.upstream_max_connections,
            max_keepalive_connections=settings.upstream_max_idle_connections,
            keepalive_expiry=settings.upstream_keepalive_s,
        )
        http = httpx.AsyncClient(timeout=HTTP_TIMEOUT, limits=limits)
        stack.push_async_callback(http.aclose)
        container.extras["http_client"] = http

    tavily = None
    if settings.tavily_api_key is not None:
        tavily = TavilyClient(
            http,
            settings.tavily_base_url,
            settings.tavily_api_key.get_secret_value(),
            deadline_s=settings.search_deadline_s,
            max_body_bytes=settings.search_max_body_bytes,
        )
        client = tavily
        container.extras.setdefault("readiness", {})["tavily"] = lambda: (
            "circuit open" if client.breaker_state == "open" else "ok"
        )
    search_cache: SearchCache
    user_cache: UserContextCache
    if container.redis is not None:
        search_cache = RedisSearchCache(container.redis, prefix=DEFAULT_KEYS.search_cache(""))
        user_cache = RedisUserContextCache(container.redis, prefix=DEFAULT_KEYS.user_context(""))
    else:
        search_cache = MemorySearchCache()
        user_cache = MemoryUserContextCache()
    container.extras["web_search"] = WebSearch(
        tavily, search_cache, ttl_s=settings.search_cache_ttl_s
    )

    embeddings = None
    if settings.embeddings_url:
        key = settings.embeddings_api_key
        embeddings = EmbeddingsClient(
            http,
            settings.embeddings_url,
            settings.embeddings_model,
            api_key=key.get_secret_value() if key is not None else None,
        )
    container.extras["embeddings"] = embeddings
    container.extras["memory"] = MemoryService(
        container.database,
        user_cache,
        max_chars=settings.max_memory_chars,
        cache_ttl_s=USER_CONTEXT_TTL_S,
    )
    container.extras["documents"] = DocumentService(
        container.database,
        container.sessions,
        embeddings,
        max_bytes=settings.max_document_bytes,
        quota_bytes=settings.upload_quota_bytes,
        quota_documents=settings.upload_quota_documents,
    )
    container.extras["retriever"] = Retriever(container.database, embeddings)
