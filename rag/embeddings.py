"""Client for an OpenAI-compatible embeddings endpoint (``POST {url}/embeddings``).

Request ``{"model": …, "input": [texts]}``; answer ``{"data": [{"index": i,
"embedding": [floats]}, …]}``. Inputs are sent in batches; the answer's ``index`` puts
vectors back in input order. Errors leave as ``errors``: the endpoint refusing
our input (400, 422) is ``BadRequest``, 413 is ``TooLarge``, everything else
(401/403 misconfiguration, 429, 5xx, timeouts, unreachable, a malformed answer) is
``Unavailable``, with ``retry_after`` from a 429's ``Retry-After``.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from errors import BadRequest, TooLarge, Unavailable


class EmbeddingsClient:
    def __init__(
        self,
        client: httpx.AsyncClient,
        url: str,
        model: str,
        *,
        api_key: str | None = None,
        batch_size: int = 64,
        timeout_s: float = 30.0,
    ) -> None:
        self._client = client
        self._url = url.rstrip("/") + "/embeddings"
        self._model = model
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._batch_size = max(1, batch_size)
        self._timeout = httpx.Timeout(timeout_s)

    @property
    def model(self) -> str:
        return self._model

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, in the same order."""
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self._batch_size):
            vectors.extend(await self._embed_batch(texts[start : start + self._batch_size]))
        return vectors

    async def embed_one(self, text: str) -> list[float]:
        [vector] = await self.embed([text])
        return vector

    async def _embed_batch(self, batch: list[str]) -> list[list[float]]:
        body = orjson.dumps({"model": self._model, "input": batch})
        try:
            response = await self._client.post(
                self._url, content=body, headers=self._headers, timeout=self._timeout
            )
        except httpx.TimeoutException as exc:
            raise Unavailable("embeddings timed out") from exc
        except httpx.TransportError as exc:
            raise Unavailable(f"cannot reach embeddings ({type(exc).__name__})") from exc
        if response.status_code != 200:
            raise _status_error(response)
        try:
            payload = orjson.loads(response.content)
            return _vectors(payload, len(batch))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise Unavailable("embeddings answered with an unexpected body") from exc


def _vectors(payload: Any, expected: int) -> list[list[float]]:
    data = payload["data"]
    if len(data) != expected:
        raise ValueError(f"asked for {expected} embeddings, got {len(data)}")
    ordered = sorted(data, key=lambda item: int(item.get("index", 0)))
    return [[float(x) for x in item["embedding"]] for item in ordered]


def _status_error(response: httpx.Response) -> Exception:
    status = response.status_code
    if status in (400, 422):
        return BadRequest(f"embeddings rejected the input ({status})")
    if status == 413:
        return TooLarge("text is too large to embed")
    retry_after = None
    if status == 429:
        try:
            retry_after = float(response.headers.get("Retry-After", ""))
        except ValueError:
            retry_after = None
    return Unavailable(
        f"embeddings are unavailable ({status})",
        details={"upstream": "embeddings", "status": status},
        retry_after=retry_after,
    )
