"""A loopback OpenAI-compatible embeddings endpoint (``POST /v1/embeddings``).

Request ``{"model", "input": [texts]}``; answer ``{"object": "list", "data": [{"object":
"embedding", "index", "embedding"}], "model", "usage"}``. The vectors are deterministic
and crude but *semantic* in one useful way: words listed in ``SYNONYMS`` share a
dimension, so "car" and "automobile" are close while having no letters in common,
which is what a test needs to tell semantic retrieval from full-text search.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.fakes.loopback import LoopbackServer

API_KEY = "sk-embed-test"
DIMENSIONS = 64
SYNONYMS = {"car": "vehicle", "automobile": "vehicle", "vehicle": "vehicle", "keep": "store"}
STOP_WORDS = {"the", "a", "an", "is", "in", "at", "of", "do", "we", "where", "our", "it"}


def embed(text: str) -> list[float]:
    vector = [0.0] * DIMENSIONS
    for word in re.findall(r"[a-z]+", text.lower()):
        if word not in STOP_WORDS:
            concept = SYNONYMS.get(word, word)
            vector[zlib.crc32(concept.encode()) % DIMENSIONS] += 1.0
    return vector


@dataclass
class FakeEmbeddings:
    base_url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)

    async def embeddings(self, request: Request) -> JSONResponse:
        if request.headers.get("authorization") != f"Bearer {API_KEY}":
            return JSONResponse({"error": {"message": "Incorrect API key"}}, status_code=401)
        body = await request.json()
        self.requests.append(body)
        data = [
            {"object": "embedding", "index": index, "embedding": embed(text)}
            for index, text in enumerate(body["input"])
        ]
        usage = {"prompt_tokens": len(data), "total_tokens": len(data)}
        return JSONResponse(
            {"object": "list", "data": data, "model": body["model"], "usage": usage}
        )


@pytest.fixture
def fake_embeddings() -> Iterator[FakeEmbeddings]:
    fake = FakeEmbeddings()
    served = LoopbackServer(
        Starlette(routes=[Route("/v1/embeddings", fake.embeddings, methods=["POST"])])
    )
    fake.base_url = f"http://127.0.0.1:{served.port}/v1"
    served.start()
    try:
        yield fake
    finally:
        served.stop()
