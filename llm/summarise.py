"""The rolling summary that keeps a long conversation inside the model's window.

When system + summary + history no longer fit, the oldest turns are *folded*: the
model merges them into the summary, and only the recent turns travel verbatim.

- ``plan_fold`` (pure) says how many of the oldest turns must go;
- ``fold`` asks a model for the new summary (``complete()``, off the streaming path);
- ``fit_messages`` is the last resort: if a request is still too large (a huge recent
  turn, a tiny window), it truncates the oldest turns' text so that no request is ever
  larger than the window.

Token arithmetic is ``llm.tokens``' (cl100k_base plus per-message framing), the same
the context builder uses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from llm.provider import ChatProvider, ChatRequest
from llm.tokens import (
    TOKENS_PER_MESSAGE,
    TOKENS_REPLY_PRIMER,
    count_messages,
    count_text,
    message_tokens,
    truncate_text,
)

# The offline model recognises a fold request by these labels (llm.offline).
SUMMARY_SYSTEM_PROMPT = (
    "You maintain the running summary of a conversation. Merge the previous summary "
    "and the new turns into one updated summary. Keep every name, number, date, "
    "decision, preference and fact; drop greetings and small talk. Write plain prose "
    "in the third person, no more than {max_tokens} tokens. Reply with the summary only."
)
PREVIOUS_SUMMARY_LABEL = "Previous summary:"
NEW_TURNS_LABEL = "New turns to fold in:"
NO_SUMMARY = "(none yet)"


def plan_fold(
    history: Sequence[Mapping[str, Any]],
    summary_tokens: int,
    budget_tokens: int,
    keep_recent_min: int,
    *,
    costs: Sequence[int] | None = None,
) -> int:
    """How many of the oldest turns must be folded into the summary.

    ``history`` is the request's messages: leading ``system`` messages always stay and
    count against the budget; the turns after them are foldable oldest first, except
    the most recent ``keep_recent_min``. ``summary_tokens`` is the size of the summary
    that will be sent (pass the summary's token cap when planning a new fold: the new
    summary may grow up to it); 0 means no summary message.

    ``costs``, if the caller counted them already, are the turns' ``message_tokens``
    (the messages after the leading system ones), in order.

    Returns the smallest count that fits ``budget_tokens``, or the largest allowed
    count when nothing allowed fits (then ``fit_messages`` must truncate).
    """
    fixed = 0
    while fixed < len(history) and history[fixed].get("role") == "system":
        fixed += 1
    turns = history[fixed:]
    base = TOKENS_REPLY_PRIMER + sum(message_tokens(m) for m in history[:fixed])
    if summary_tokens > 0:
        base += TOKENS_PER_MESSAGE + summary_tokens
    if costs is None:
        costs = [message_tokens(turn) for turn in turns]
    remaining = sum(costs)
    most = max(0, len(turns) - max(0, keep_recent_min))
    for folded in range(most + 1):
        if base + remaining <= budget_tokens:
            return folded
        if folded < len(costs):
            remaining -= costs[folded]
    return most


def fit_messages(messages: Sequence[Mapping[str, Any]], budget_tokens: int) -> list[dict[str, Any]]:
    """``messages`` with the oldest non-system texts truncated until they fit.

    The newest message is cut last, system messages only if nothing else is left, so
    that the request never exceeds the window whatever the caller planned.
    """
    result = [dict(m) for m in messages]
    order = [i for i, m in enumerate(result) if m.get("role") != "system"]
    order += [i for i, m in enumerate(result) if m.get("role") == "system"]
    for index in order:
        excess = count_messages(result) - budget_tokens
        if excess <= 0:
            break
        text = str(result[index].get("content") or "")
        keep = max(0, count_text(text) - excess)
        # Keep the end of an old turn: its conclusion matters more than its opening.
        result[index]["content"] = _keep_tail(text, keep)
    return result


def _keep_tail(text: str, max_tokens: int) -> str:
    if max_tokens <= 0:
        return ""
    reversed_cut = truncate_text(text[::-1], max_tokens)
    tail = reversed_cut[::-1]
    # Reversed text tokenises differently; trim until the tail really fits.
    while tail and count_text(tail) > max_tokens:
        tail = tail[max(1, len(tail) // 10) :]
    return tail


def fold_request(
    model: str,
    summary: str | None,
    turns: Sequence[Mapping[str, Any]],
    *,
    max_summary_tokens: int,
    max_input_tokens: int | None = None,
) -> ChatRequest:
    lines = [f"{turn.get('role', 'user')}: {turn.get('content') or ''}" for turn in turns]
    user = f"{PREVIOUS_SUMMARY_LABEL}\n{summary or NO_SUMMARY}\n\n{NEW_TURNS_LABEL}\n" + "\n".join(
        lines
    )
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SUMMARY_SYSTEM_PROMPT.format(max_tokens=max_summary_tokens)},
        {"role": "user", "content": user},
    ]
    if max_input_tokens is not None:
        messages = fit_messages(messages, max_input_tokens)
    return ChatRequest(
        model=model,
        messages=messages,
        max_tokens=max_summary_tokens,
        temperature=0.0,
        purpose="summary",
    )


async def fold(
    provider: ChatProvider,
    model: str,
    summary: str | None,
    turns: list[dict[str, Any]],
    *,
    max_summary_tokens: int,
    max_input_tokens: int | None = None,
) -> str:
    """The previous summary with ``turns`` merged in, at most ``max_summary_tokens``.

    ``max_input_tokens`` (the model's window minus ``max_summary_tokens``) bounds the
    fold request itself. Errors are the provider's (``Unavailable``...): the caller
    keeps the old summary and tries again at the next turn.
    """
    if not turns:
        return summary or ""
    request = fold_request(
        model,
        summary,
        turns,
        max_summary_tokens=max_summary_tokens,
        max_input_tokens=max_input_tokens,
    )
    text = (await provider.complete(request)).strip()
    return truncate_text(text, max_summary_tokens).strip() or (summary or "")
