"""The one context builder: everything the model sees for a turn, within its window.

Order of the prompt (fixed)::

    system   system prompt
             What you know about the user   (memory items)
             Summary of the earlier conversation
             Relevant excerpts              (retrieved passages)
             Web search results / search note
    …        recent turns, oldest to newest
    user     the current message

Budget. ``limit = window - reply_reserve`` is a hard ceiling: the result's
``count_messages`` never exceeds it. Building aims lower, at
``limit * (1 - safety_margin)``, because our tokenizer (cl100k) only estimates the
model's. The system prompt and the current message are always kept whole; when they
alone do not fit, that is ``TooLarge``. What remains (``room``) is shared:

- each section has a cap, a share of ``room``: memory 15 %, summary 20 %, passages
  30 %, search 25 %; a longer section is cut at its end to its cap (memory loses its
  last items, which callers list least important last);
- recent turns have no cap: whatever the sections do not use flows to them;
- when everything still does not fit, material goes in this order until it does:
  1. the oldest recent turns, down to the newest ``KEEP_TURNS``;
  2. search results, trimmed from the end (the search note stays);
  3. retrieved passages, trimmed from the end;
  4. the summary, trimmed from the end;
  5. the remaining recent turns, oldest first;
  6. memory, trimmed from the end.
  Never the system prompt or the current message. A section cut to under
  ``MIN_SECTION_TOKENS`` is dropped whole rather than left as a stub.

``dropped`` reports, per section (``memory``, ``summary``, ``passages``, ``search``,
``turns``), how many tokens of its content were left out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from errors import TooLarge
from llm.tokens import (
    TOKENS_PER_MESSAGE,
    TOKENS_REPLY_PRIMER,
    count_text,
    message_tokens,
    truncate_text,
)

SECTION_CAPS: Mapping[str, float] = {
    "memory": 0.15,
    "summary": 0.20,
    "passages": 0.30,
    "search": 0.25,
}
KEEP_TURNS = 4
MIN_SECTION_TOKENS = 32
SEPARATOR = "\n\n"
SEPARATOR_TOKENS = 1
TRIM_ORDER = ("search", "passages", "summary")  # steps 2-4; memory is step 6


@dataclass(frozen=True, slots=True)
class BuiltContext:
    messages: list[dict[str, Any]]
    prompt_tokens: int
    dropped: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Section:
    name: str
    header: str
    body: str  # the part that may be trimmed
    lines: list[str] | None = None  # memory: trimmed by whole items

    def text(self) -> str:
        if not self.body:
            return ""
        return f"{self.header}\n{self.body}" if self.header else self.body

    def cost(self) -> int:
        text = self.text()
        return count_text(text) + SEPARATOR_TOKENS if text else 0

    def trim_to(self, tokens: int) -> int:
        """Cut to at most ``tokens`` (all in); returns the tokens of content dropped."""
        before = count_text(self.body) if self.body else 0
        if self.cost() <= tokens:
            return 0
        room = tokens - SEPARATOR_TOKENS - (count_text(self.header) + 1 if self.header else 0)
        if self.lines is not None:
            while self.lines and self.cost() > tokens:
                self.lines.pop()
                self.body = "\n".join(self.lines)
        elif room < MIN_SECTION_TOKENS:
            self.body = ""
        else:
            self.body = truncate_text(self.body, room - 1).rstrip() + "…"
            while self.body and self.cost() > tokens:  # re-encoding may differ by a token
                self.body = truncate_text(self.body, count_text(self.body) - 2).rstrip() + "…"
        if self.lines is None and self.body and count_text(self.body) < MIN_SECTION_TOKENS:
            self.body = ""
        return before - (count_text(self.body) if self.body else 0)


def build_context(
    *,
    system_prompt: str,
    memory_items: list[str],
    summary: str | None,
    passages_text: str,
    search_text: str,
    search_note: str | None,
    history_turns: list[dict[str, Any]],
    window_tokens: int,
    reply_reserve_tokens: int,
    safety_margin: float = 0.05,
    history_costs: Sequence[int] | None = None,
) -> BuiltContext:
    """Messages for the model; ``history_turns`` is oldest first and ends with the
    current user message. ``history_costs``, if the caller counted them already, are
    what each of them costs (``llm.tokens.message_tokens``). Rules and drop order
    in the module docstring."""
    if not history_turns:
        raise ValueError("history_turns must end with the current user message")
    *older, current = history_turns
    if history_costs is None:
        history_costs = [message_tokens(turn) for turn in history_turns]
    *older_costs, current_cost = history_costs
    limit = window_tokens - reply_reserve_tokens
    target = int(limit * (1 - safety_margin))
    note = (search_note or "").strip()
    fixed_text = system_prompt.strip() + (SEPARATOR + note if note else "")
    fixed = TOKENS_REPLY_PRIMER + TOKENS_PER_MESSAGE + count_text(fixed_text) + current_cost
    if fixed > limit:
        raise TooLarge("the message is too long for this model's context window")
    room = max(0, target - fixed)

    sections = _sections(memory_items, summary, passages_text, search_text)
    fit = _Fit(sections, list(older), list(older_costs), current_cost)
    fit.into(room)
    messages = _assemble(fixed_text, sections, note, fit.turns, current)
    # The sum of parts can differ from the real count by a token or two per join;
    # the ceiling is checked on the real thing, removing in the same order.
    while fit.prompt_tokens(messages) > limit:
        fit.drop_one()
        messages = _assemble(fixed_text, sections, note, fit.turns, current)
    return BuiltContext(messages, fit.prompt_tokens(messages), fit.dropped)


def _sections(
    memory_items: list[str], summary: str | None, passages_text: str, search_text: str
) -> dict[str, _Section]:
    items = [f"- {item.strip()}" for item in memory_items if item.strip()]
    return {
        "memory": _Section("memory", "What you know about the user:", "\n".join(items), items),
        "summary": _Section(
            "summary", "Summary of the earlier conversation:", (summary or "").strip()
        ),
        "passages": _Section("passages", "", passages_text.strip()),
        "search": _Section("search", "", search_text.strip()),
    }


class _Fit:
    """The sections and the older turns, cut down in the module docstring's order;
    ``dropped`` counts the tokens each lost."""

    def __init__(
        self,
        sections: dict[str, _Section],
        turns: list[dict[str, Any]],
        turn_costs: list[int],
        current_cost: int,
    ) -> None:
        self.sections = sections
        self.turns = turns
        self.turn_costs = turn_costs
        self.current_cost = current_cost
        self.dropped = {name: 0 for name in (*sections, "turns")}
        self._room = 0

    def into(self, room: int) -> None:
        """Cap each section at its share, then drop and trim until all fits ``room``."""
        self._room = room
        for name, section in self.sections.items():
            self.dropped[name] += section.trim_to(int(room * SECTION_CAPS[name]))
        self._drop_oldest_turns(KEEP_TURNS)
        for name in TRIM_ORDER:
            self._trim(name)
        self._drop_oldest_turns(0)
        self._trim("memory")

    def drop_one(self) -> None:
        """One more step in the same order: the oldest turn, else a bit of a section."""
        if self.turns:
            self._drop_oldest_turn()
            return
        left = [n for n in (*TRIM_ORDER, "memory") if self.sections[n].body]
        if not left:
            raise TooLarge("the message is too long for this model's context window")
        section = self.sections[left[0]]
        self.dropped[left[0]] += section.trim_to(section.cost() - 8)

    def prompt_tokens(self, messages: list[dict[str, Any]]) -> int:
        # What ``count_messages`` would say, without counting every turn again: only
        # the system message is more than the sum of its parts.
        system = TOKENS_PER_MESSAGE + count_text(messages[0]["content"])
        return TOKENS_REPLY_PRIMER + system + sum(self.turn_costs) + self.current_cost

    def _total(self) -> int:
        return sum(s.cost() for s in self.sections.values()) + sum(self.turn_costs)

    def _drop_oldest_turn(self) -> None:
        self.turns.pop(0)
        self.dropped["turns"] += self.turn_costs.pop(0) - TOKENS_PER_MESSAGE

    def _drop_oldest_turns(self, keep: int) -> None:
        while self._total() > self._room and len(self.turns) > keep:
            self._drop_oldest_turn()

    def _trim(self, name: str) -> None:
        over = self._total() - self._room
        if over > 0:
            section = self.sections[name]
            self.dropped[name] += section.trim_to(max(0, section.cost() - over))


def _assemble(
    fixed_text: str,
    sections: Mapping[str, _Section],
    note: str,
    turns: list[dict[str, Any]],
    current: dict[str, Any],
) -> list[dict[str, Any]]:
    system_prompt = fixed_text.removesuffix(SEPARATOR + note) if note else fixed_text
    parts = [system_prompt]
    parts += [s.text() for s in sections.values() if s.text()]
    if note:
        parts.append(note)
    system = {"role": "system", "content": SEPARATOR.join(p for p in parts if p)}
    history = [
        {"role": t.get("role", "user"), "content": t.get("content") or ""}
        for t in (*turns, current)
    ]
    return [system, *history]
