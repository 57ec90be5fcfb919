"""Merging retrieval rankings and presenting passages to the model.

Lexical search (full-text) and semantic search (embeddings) score on scales that
cannot be compared, so they are merged by rank, not score: reciprocal-rank fusion
gives each id ``sum(1 / (k + rank))`` over the rankings it appears in (rank from 1),
with the customary ``k = 60`` that keeps one list's top hit from dominating.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from llm.tokens import count_text, truncate_text

SourceKind = Literal["document", "history"]


def fuse(rankings: list[list[str]], k: int = 60) -> list[str]:
    """Ids from all rankings, best fused score first; ties keep first-seen order."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        seen: set[str] = set()
        for rank, item in enumerate(ranking, start=1):
            if item in seen:  # a duplicate within one list counts once, at its best rank
                continue
            seen.add(item)
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    order = {item: n for n, item in enumerate(scores)}
    return sorted(scores, key=lambda item: (-scores[item], order[item]))


@dataclass(frozen=True, slots=True)
class Passage:
    source_kind: SourceKind
    source_id: str
    title: str
    text: str
    score: float
    seq: int | None = None  # the message's seq for "history" passages

    @property
    def label(self) -> str:
        if self.source_kind == "history":
            return f"earlier message #{self.seq}" if self.seq is not None else "earlier message"
        return f"document “{self.title}”" if self.title else "document"


def format_passages(passages: list[Passage], budget_tokens: int) -> str:
    """Passages in the given order, each labelled with its source, within the budget.

    Passages are kept whole while they fit; the first that does not fit is cut when
    a useful part of it (32 tokens or more) still fits, and everything after it is left
    out: the order is the ranking, so what falls off is the least relevant.
    """
    header = "Relevant excerpts (from this session's documents and earlier messages):"
    used = count_text(header)
    blocks: list[str] = []
    for passage in passages:
        head = f"\n\n[{passage.label}]\n"
        block = head + passage.text.strip()
        cost = count_text(block)
        if used + cost <= budget_tokens:
            blocks.append(block)
            used += cost
            continue
        room = budget_tokens - used - count_text(head) - 1
        if room >= 32:
            block = head + truncate_text(passage.text.strip(), room) + "…"
            if used + count_text(block) <= budget_tokens:
                blocks.append(block)
        break
    return header + "".join(blocks) if blocks else ""
