"""Learning what to remember about a user from a finished turn.

After a turn, a cheap model call is asked for JSON (``response_format: json_object``):
``{"items": [{"kind": "preference"|"fact", "content": "…", "replaces": "<id>"?}]}``.
The answer is parsed defensively (anything malformed yields nothing), validated
(known kind, non-empty, at most ``max_chars``) and reconciled with what is already
remembered:

- **duplicate**: the same text after normalising (case, whitespace, final
  punctuation), or a near duplicate (content-word sets with Jaccard similarity of
  0.8 or more) of an existing item or of an earlier candidate: dropped;
- **update**: a candidate replaces an existing item of the same kind when the model
  names it in ``replaces``, or, failing that, when both are short (at most 6 content
  words) and equal once their last content word is removed ("prefers Python" vs
  "prefers Rust", "lives in Oslo" vs "lives in Paris"; but "prefers concise answers"
  does not replace "prefers Python");
- otherwise: added.

Only ``learned`` items come from here; what the user typed in themselves is never
replaced by a guess: pass those as ``existing`` with ``replaceable=False``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from errors import ParleyError
from llm.provider import ChatRequest
from rag.query import STOP_WORDS

log = logging.getLogger(__name__)

Kind = Literal["preference", "fact"]
KINDS: tuple[Kind, ...] = ("preference", "fact")
NEAR_DUPLICATE = 0.8
MAX_SLOT_WORDS = 6
_SUBJECT_WORDS = frozenset({"user", "users", "user's"})
_WORD = re.compile(r"\w+(?:'\w+)?", re.UNICODE)

Complete = Callable[[ChatRequest], Awaitable[str]]

PROMPT = """You maintain a short memory about the user of a chat assistant.
Read the last exchange and list only durable preferences (how the user wants answers:
language, tone, format, tools they use) and facts about the user (name, job, location,
projects) that will still matter in later conversations. Ignore anything about other
people, one-off requests, and anything already remembered unless it changed.
Write each item as a short third-person sentence without "The user", e.g.
"prefers answers in French", "works as a nurse in Leeds".
Known items are listed with their ids. If a new item changes a known one, put that
id in "replaces".
Answer with JSON only: {"items": [{"kind": "preference" or "fact", "content": "...",
"replaces": "<id, optional>"}]}. Answer {"items": []} when there is nothing to keep."""


@dataclass(frozen=True, slots=True)
class MemoryItem:
    id: str
    kind: Kind
    content: str
    replaceable: bool = True  # False for items the user wrote themselves


@dataclass(frozen=True, slots=True)
class Candidate:
    kind: Kind
    content: str
    replaces: str | None = None


@dataclass(slots=True)
class MemoryChanges:
    add: list[Candidate] = field(default_factory=list)
    replace: list[tuple[str, Candidate]] = field(default_factory=list)  # (existing id, new)

    def __bool__(self) -> bool:
        return bool(self.add or self.replace)


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().rstrip(".!;,").strip().lower()


def content_words(text: str) -> list[str]:
    words = [w for w in _WORD.findall(text.lower()) if w not in STOP_WORDS]
    while words and words[0] in _SUBJECT_WORDS:
        words.pop(0)
    return words


def jaccard(a: set[str], b: set[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _slot(words: list[str]) -> tuple[str, ...] | None:
    if not 2 <= len(words) <= MAX_SLOT_WORDS:
        return None
    return tuple(words[:-1])


def build_extraction_request(
    *,
    model: str,
    user_message: str,
    assistant_reply: str,
    existing: list[MemoryItem],
    max_chars: int,
) -> ChatRequest:
    known = "\n".join(f"- [{item.id}] ({item.kind}) {item.content}" for item in existing)
    exchange = (
        f"Known items:\n{known or '(none)'}\n\n"
        f"Each item at most {max_chars} characters.\n\n"
        f"User: {user_message}\n\nAssistant: {assistant_reply}"
    )
    return ChatRequest(
        model=model,
        messages=[{"role": "system", "content": PROMPT}, {"role": "user", "content": exchange}],
        max_tokens=300,
        temperature=0.0,
        response_format={"type": "json_object"},
        purpose="memory",
    )


def parse_extraction(text: str, *, max_chars: int, max_items: int = 5) -> list[Candidate]:
    """The valid candidates in a model's answer; anything malformed is skipped."""
    text = text.strip()
    if text.startswith("```"):  # some models fence JSON even when told not to
        text = text.strip("`").removeprefix("json").strip()
    try:
        payload: Any = orjson.loads(text)
    except orjson.JSONDecodeError:
        return []
    items = payload.get("items") if isinstance(payload, dict) else None
    if not isinstance(items, list):
        return []
    candidates: list[Candidate] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        kind, content, replaces = item.get("kind"), item.get("content"), item.get("replaces")
        if kind not in KINDS or not isinstance(content, str):
            continue
        content = " ".join(content.split())
        if not content or len(content) > max_chars:
            continue
        replaces = str(replaces) if isinstance(replaces, str | int) and replaces != "" else None
        candidates.append(Candidate(kind, content, replaces))
        if len(candidates) == max_items:
            break
    return candidates


def reconcile(candidates: list[Candidate], existing: list[MemoryItem]) -> MemoryChanges:
    """What to add and what to replace (rules in the module docstring)."""
    changes = MemoryChanges()
    by_id = {item.id: item for item in existing}
    kept: list[tuple[str, set[str]]] = [
        (normalise(item.content), set(content_words(item.content))) for item in existing
    ]
    replaced: set[str] = set()
    for candidate in candidates:
        norm, words = normalise(candidate.content), content_words(candidate.content)
        if any(norm == k or jaccard(set(words), w) >= NEAR_DUPLICATE for k, w in kept):
            continue
        target = _replace_target(candidate, words, by_id, existing, replaced)
        kept.append((norm, set(words)))
        if target is None:
            changes.add.append(candidate)
        else:
            replaced.add(target)
            changes.replace.append((target, candidate))
    return changes


def _replace_target(
    candidate: Candidate,
    words: list[str],
    by_id: dict[str, MemoryItem],
    existing: list[MemoryItem],
    replaced: set[str],
) -> str | None:
    named = by_id.get(candidate.replaces or "")
    if named and named.kind == candidate.kind and named.replaceable and named.id not in replaced:
        return named.id
    slot = _slot(words)
    if slot is None:
        return None
    for item in existing:
        if item.kind != candidate.kind or not item.replaceable or item.id in replaced:
            continue
        if _slot(content_words(item.content)) == slot:
            return item.id
    return None


async def extract_memory(
    complete: Complete,
    *,
    model: str,
    user_message: str,
    assistant_reply: str,
    existing: list[MemoryItem],
    max_chars: int,
) -> MemoryChanges:
    """Ask the model and reconcile. Best effort: a failed call changes nothing."""
    request = build_extraction_request(
        model=model,
        user_message=user_message,
        assistant_reply=assistant_reply,
        existing=existing,
        max_chars=max_chars,
    )
    try:
        answer = await complete(request)
    except ParleyError as exc:
        log.info("memory extraction skipped: %s", exc.message)
        return MemoryChanges()
    return reconcile(parse_extraction(answer, max_chars=max_chars), existing)
