"""Embedding vectors as bytes for storage, and the similarity between them.

Vectors are stored as little-endian float32 (4 bytes per dimension) whatever the
machine's byte order, so a database written on one node reads the same on another.
Pure Python with ``array``: the candidate sets are one session's chunks (hundreds,
not millions), where numpy's speed is not worth the dependency.
"""

from __future__ import annotations

import math
import sys
from array import array
from collections.abc import Iterable, Sequence

from errors import BadRequest


def pack(vector: Sequence[float]) -> bytes:
    values = array("f", vector)
    if sys.byteorder == "big":
        values.byteswap()
    return values.tobytes()


def unpack(data: bytes) -> list[float]:
    if len(data) % 4:
        raise BadRequest("stored vector is not a whole number of float32 values")
    values = array("f")
    values.frombytes(data)
    if sys.byteorder == "big":
        values.byteswap()
    return values.tolist()


def norm(vector: Sequence[float]) -> float:
    return math.sqrt(math.fsum(x * x for x in vector))


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity in [-1, 1]; 0.0 when either vector is all zeros."""
    if len(a) != len(b):
        raise ValueError(f"vectors differ in dimension: {len(a)} and {len(b)}")
    denominator = norm(a) * norm(b)
    if denominator == 0.0:
        return 0.0
    return math.fsum(x * y for x, y in zip(a, b, strict=True)) / denominator


def top_k(
    query: Sequence[float], candidates: Iterable[tuple[str, bytes]], k: int
) -> list[tuple[str, float]]:
    """The ``k`` candidate ids most similar to ``query``, best first.

    Candidates whose dimension differs (embedded with another model) are skipped
    rather than failing the whole retrieval.
    """
    scored = []
    for candidate_id, data in candidates:
        vector = unpack(data)
        if len(vector) == len(query):
            scored.append((candidate_id, cosine(query, vector)))
    scored.sort(key=lambda item: item[1], reverse=True)
    return scored[:k]
