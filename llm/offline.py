"""Parley's built-in offline model, used when no OPENROUTER_API_KEY is set.

Deterministic (the same request gives the same reply, word for word) and paced like a
real model (``token_delay_s`` per word; 0 for tests and benchmarks). It does not
pretend: it says it is the offline model, then shows what it was given, so memory,
web search, retrieval and summaries can be seen working without a key:

- a short quote of the last user message and how many earlier turns it sees;
- for each section it finds in the system messages, its kind and first line. A
  section starts at a heading line: Markdown (``## Memory``), a bracketed or tagged
  name (``[Search results]``, ``<documents>``) or a short line ending in a colon
  (``Conversation summary:``). Kinds by keyword: memory / about the user; search /
  web; document / passage / retrieved / excerpt; summary. Search results also show
  their first URL.

``complete()`` answers fold requests (``llm.summarise``) with an extractive summary
that keeps the sentences carrying names, numbers and decisions, memory-extraction
requests (a JSON ``response_format``) with rule-based ``{"items": [...]}``, and
anything else with the streamed reply.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncGenerator
from typing import Any

import orjson

from llm.provider import ChatEvent, ChatRequest, StreamFinished, TextDelta, Usage
from llm.summarise import NEW_TURNS_LABEL, PREVIOUS_SUMMARY_LABEL
from llm.tokens import count_messages, count_text, truncate_text

OFFLINE_MODEL = "parley-offline"
INTRO = (
    "I'm Parley's offline model: no OPENROUTER_API_KEY is set, so this reply comes "
    "from a built-in script, not a language model."
)

_HEADING = re.compile(
    r"^\s*(?:#{1,6}\s*(?P<md>.+?)"  # ## Memory
    r"|[\[<]\s*(?P<tag>[^\]>]{1,60})[\]>]"  # [Search results] or <documents>
    r"|(?P<colon>[A-Za-z][^:\n]{0,100}):)\s*$"  # Conversation summary:
)
_KINDS = (
    ("summary", re.compile(r"summar", re.I)),
    ("memory", re.compile(r"memor|about the user|remember", re.I)),
    ("search", re.compile(r"search|web", re.I)),
    ("documents", re.compile(r"document|passage|retriev|excerpt|knowledge", re.I)),
)
END_OF_MESSAGE = "# end"  # closes the last section
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s*")
_URL = re.compile(r"https?://[^\s)\]>\"']+")
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]?")
_KEY = re.compile(
    r"\d|\b(?:decid|agree|prefer|like|love|name|call|will|must|need|plan|deadline|"
    r"budget|live|work|born|meet|chose|choose)\w*",
    re.I,
)
_NAME = re.compile(r"(?<=[a-z,;] )[A-Z][a-z]+")
_MEMORY_RULES = (
    (re.compile(r"\bmy name is ([A-Z][\w'-]*(?: [A-Z][\w'-]*)*)", re.I), "fact", "Name: {}"),
    (re.compile(r"\bI (?:live|am based) in ([^.,;!?\n]+)", re.I), "fact", "Lives in {}"),
    (re.compile(r"\bI work (?:at|for|as) ([^.,;!?\n]+)", re.I), "fact", "Works {}"),
    (re.compile(r"\bI prefer ([^.;!?\n]+)", re.I), "preference", "Prefers {}"),
    (re.compile(r"\bI (?:like|love|enjoy) ([^.;!?\n]+)", re.I), "preference", "Likes {}"),
)


class OfflineProvider:
    name = "offline"

    def __init__(self, token_delay_s: float = 0.02, *, context_length: int = 8192) -> None:
        self._delay_s = token_delay_s
        self._context_length = context_length

    async def stream(self, request: ChatRequest) -> AsyncGenerator[ChatEvent, None]:
        if request.on_sent is not None:
            request.on_sent()  # nothing to send: the answer is composed right here
        reply = compose_reply(request.messages)
        finish: Any = "stop"
        if request.max_tokens is not None and count_text(reply) > request.max_tokens:
            reply, finish = truncate_text(reply, request.max_tokens), "length"
        for word in re.findall(r"\S+\s*", reply):
            # A pause per word even at 0 s, so that a fast offline stream still lets
            # other tasks (fan-out, cancel) run between deltas.
            await asyncio.sleep(self._delay_s)
            yield TextDelta(word)
        yield StreamFinished(
            finish_reason=finish,
            model=request.model,
            usage=_usage(request, reply),
            generation_id=_generation_id(request),
        )

    async def complete(self, request: ChatRequest) -> str:
        text = _last_text(request.messages, "user")
        if PREVIOUS_SUMMARY_LABEL in text and NEW_TURNS_LABEL in text:
            return summarise_extractively(text, request.max_tokens)
        if request.response_format and "json" in str(request.response_format.get("type", "")):
            return extract_memory(request.messages)
        reply = compose_reply(request.messages)
        return truncate_text(reply, request.max_tokens) if request.max_tokens else reply

    async def context_length(self, model: str) -> int | None:
        return self._context_length

    async def aclose(self) -> None:
        """Nothing to release."""


def compose_reply(messages: list[dict[str, Any]]) -> str:
    parts = [INTRO]
    last_user = _last_text(messages, "user")
    if last_user:
        parts.append(f'You said: "{_quote(last_user)}".')
    earlier = sum(1 for m in messages if m.get("role") in ("user", "assistant")) - 1
    if earlier > 0:
        parts.append(f"I can see {earlier} earlier {'turn' if earlier == 1 else 'turns'}.")
    else:
        parts.append("This is the start of our conversation.")
    for kind, first_line, url in find_sections(messages):
        if kind == "summary":
            parts.append(f'I have a summary of our earlier talk: "{_quote(first_line)}".')
        elif kind == "memory":
            parts.append(f'I remember this about you: "{_quote(first_line)}".')
        elif kind == "search":
            where = f" ({url})" if url and url not in first_line else ""
            parts.append(f'A web search found: "{_quote(first_line)}"{where}.')
        else:
            parts.append(f'Your documents say: "{_quote(first_line)}".')
    parts.append("Set OPENROUTER_API_KEY to talk to a real model.")
    return " ".join(parts)


def find_sections(messages: list[dict[str, Any]]) -> list[tuple[str, str, str | None]]:
    """``(kind, first line, first URL)`` of each recognised section, in order."""
    found: list[tuple[str, str, str | None]] = []
    seen: set[str] = set()
    for message in messages:
        if message.get("role") != "system":
            continue
        kind: str | None = None
        body: list[str] = []
        lines = str(message.get("content") or "").splitlines()
        for number, line in enumerate([*lines, END_OF_MESSAGE]):
            match = _HEADING.match(line)
            title = match and (match.group("md") or match.group("tag") or match.group("colon"))
            new_kind = next((name for name, rule in _KINDS if rule.search(title or "")), None)
            # A bare "[label]" line inside a section labels a passage or a result; it
            # starts a section only when it names one. Passages carry their document's
            # own Markdown headings ("# Handbook" opens most .md files): inside the
            # documents section those are text, not the start of another section.
            starts = match is not None and (new_kind is not None or not match.group("tag"))
            if match is not None and starts and kind == "documents" and match.group("md"):
                starts = number == len(lines)
            if starts:
                if kind and kind not in seen and any(_is_text(t) for t in body):
                    seen.add(kind)
                    first = _first_line(body)
                    urls = _URL.findall("\n".join(body))
                    found.append((kind, first, urls[0] if urls else None))
                kind, body = new_kind, []
            elif kind:
                body.append(line)
    return found


def summarise_extractively(prompt: str, max_tokens: int | None) -> str:
    """Previous summary + the key sentences of the new turns, within ``max_tokens``."""
    previous, _, turns = prompt.partition(NEW_TURNS_LABEL)
    previous = previous.replace(PREVIOUS_SUMMARY_LABEL, "").strip()
    kept = [] if previous.startswith("(none") else [previous]
    for line in turns.strip().splitlines():
        role, _, text = line.partition(": ")
        if not text or text.startswith(INTRO[:20]):
            continue
        sentences = [s.strip() for s in _SENTENCE.findall(text) if s.strip()]
        key = [s for s in sentences if _KEY.search(s) or _NAME.search(s)] or sentences[:1]
        if key:
            kept.append(f"{role.strip().capitalize()}: {' '.join(key)}")
    summary = " ".join(kept)
    return truncate_text(summary, max_tokens) if max_tokens else summary


def extract_memory(messages: list[dict[str, Any]]) -> str:
    items: list[dict[str, str]] = []
    for message in messages:
        if message.get("role") != "user":
            continue
        for rule, kind, template in _MEMORY_RULES:
            for match in rule.finditer(str(message.get("content") or "")):
                content = template.format(match.group(1).strip())
                if all(item["content"] != content for item in items):
                    items.append({"kind": kind, "content": content})
    return orjson.dumps({"items": items}).decode()


def _first_line(body: list[str]) -> str:
    """The first line of prose: a document's heading says less than what follows it."""
    lines = [_BULLET.sub("", t).strip() for t in body if _is_text(t)]
    prose = [line for line in lines if not line.startswith("#")]
    return (prose or lines)[0]


def _is_text(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not (stripped.startswith("[") and stripped.endswith("]"))


def _last_text(messages: list[dict[str, Any]], role: str) -> str:
    for message in reversed(messages):
        if message.get("role") == role and isinstance(message.get("content"), str):
            return str(message["content"])
    return ""


def _quote(text: str, words: int = 12) -> str:
    split = " ".join(text.split()).split(" ")
    quoted = " ".join(split[:words])
    return quoted + ("…" if len(split) > words else "")


def _usage(request: ChatRequest, reply: str) -> Usage:
    return Usage(count_messages(request.messages), count_text(reply))


def _generation_id(request: ChatRequest) -> str:
    digest = hashlib.sha256(orjson.dumps(request.messages, option=orjson.OPT_SORT_KEYS))
    return f"offline-{digest.hexdigest()[:16]}"


def is_offline_reply(text: str) -> bool:
    return text.startswith(INTRO[:30])
