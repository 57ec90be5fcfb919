from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from errors import BadRequest, TooLarge, Unavailable
from rag.embeddings import EmbeddingsClient
from rag.vectors import cosine, pack, top_k, unpack


def test_vectors_round_trip_as_little_endian_float32() -> None:
    data = pack([1.0, -0.5, 0.25])
    assert len(data) == 12
    assert data[:4] == b"\x00\x00\x80\x3f"
    assert unpack(data) == [1.0, -0.5, 0.25]


def test_cosine_similarity() -> None:
    assert cosine([1, 0], [1, 0]) == pytest.approx(1.0)
    assert cosine([1, 0], [0, 1]) == pytest.approx(0.0)
    assert cosine([1, 1], [-1, -1]) == pytest.approx(-1.0)
    assert cosine([0, 0], [1, 1]) == 0.0


def test_top_k_ranks_by_similarity_and_skips_other_dimensions() -> None:
    candidates = [
        ("far", pack([0.0, 1.0])),
        ("near", pack([1.0, 0.1])),
        ("other-model", pack([1.0, 0.0, 0.0])),
    ]
    assert [cid for cid, _ in top_k([1.0, 0.0], candidates, k=5)] == ["near", "far"]


def embeddings(handler: Callable[[httpx.Request], httpx.Response], **kw: int) -> EmbeddingsClient:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return EmbeddingsClient(http, "http://embed.test/v1", "m-small", api_key="k", **kw)


async def test_texts_are_embedded_in_batches_and_returned_in_input_order() -> None:
    seen: list[dict[str, object]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        assert request.url == "http://embed.test/v1/embeddings"
        assert request.headers["authorization"] == "Bearer k"
        data = [
            {"object": "embedding", "index": i, "embedding": [float(len(text)), 1.0]}
            for i, text in enumerate(body["input"])
        ]
        return httpx.Response(200, json={"object": "list", "data": data[::-1], "model": "m"})

    vectors = await embeddings(handler, batch_size=2).embed(["a", "bb", "ccc"])

    assert vectors == [[1.0, 1.0], [2.0, 1.0], [3.0, 1.0]]
    assert [b["input"] for b in seen] == [["a", "bb"], ["ccc"]]
    assert seen[0]["model"] == "m-small"


@pytest.mark.parametrize(
    "status,error",
    [(400, BadRequest), (413, TooLarge), (401, Unavailable), (503, Unavailable)],
)
async def test_error_statuses_are_mapped(status: int, error: type[Exception]) -> None:
    client = embeddings(lambda request: httpx.Response(status, json={"error": {}}))
    with pytest.raises(error):
        await client.embed(["x"])


async def test_a_rate_limit_carries_retry_after() -> None:
    client = embeddings(lambda r: httpx.Response(429, headers={"Retry-After": "3"}))
    with pytest.raises(Unavailable) as caught:
        await client.embed(["x"])
    assert caught.value.retry_after == 3


async def test_a_wrong_number_of_vectors_is_unavailable() -> None:
    client = embeddings(lambda r: httpx.Response(200, json={"data": []}))
    with pytest.raises(Unavailable):
        await client.embed(["x"])


async def test_a_timeout_is_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(Unavailable):
        await embeddings(handler).embed(["x"])
