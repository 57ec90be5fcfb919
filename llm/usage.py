"""Token usage for a stream that did not report it (cancelled, failed, cut off).

OpenRouter sends usage only in the final chunk, so a cancelled stream has none. The
runner stores a local estimate at once (``estimate_usage``) and may later, off the hot
path, ask OpenRouter what it really counted (``recover_usage``): its generation record
appears a moment after the stream ends, hence the few spaced attempts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from errors import ParleyError
from llm.provider import Usage
from llm.tokens import count_messages, count_text

log = logging.getLogger(__name__)

UsageLookup = Callable[[str], Awaitable[Usage | None]]


def estimate_usage(messages: Sequence[Mapping[str, Any]], text: str) -> Usage:
    """What the prompt and the text produced so far cost, by Parley's tokenizer."""
    return Usage(prompt_tokens=count_messages(messages), completion_tokens=count_text(text))


async def recover_usage(
    lookup: UsageLookup,
    generation_id: str,
    *,
    attempts: int = 3,
    delay_s: float = 1.0,
) -> Usage | None:
    """The upstream's own count for ``generation_id`` (e.g.
    ``OpenRouterProvider.generation_usage``), or None when it never becomes known."""
    for attempt in range(attempts):
        try:
            usage = await lookup(generation_id)
        except ParleyError as exc:
            log.info("usage lookup for %s failed: %s", generation_id, exc.message)
            usage = None
        if usage is not None:
            return usage
        if attempt + 1 < attempts:
            await asyncio.sleep(delay_s * (attempt + 1))
    return None
