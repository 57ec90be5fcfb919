"""Plain text chunks of one stream, read without parsing their JSON.

The chunks of one OpenRouter stream differ only in their text: the id, the provider,
the model, the timestamp and every other field repeat. A ``TextChunkShape`` learns,
from a plain text chunk parsed in full, the JSON before and after its text; a later
chunk that starts and ends with exactly those is that chunk with other text, and its
text is what lies between (a JSON string's body: taken as it is when it has no
escapes, decoded by orjson when it has). At tens of thousands of chunks a second,
parsing each in full was most of what the relay spent per token.

Sound by construction: a shape is kept only when the chunk with a probe in place of
its text parses as the same chunk with the probe as its text, so whatever string body
lies between, the chunk is the learnt one with that text. A chunk that does not fit
(a finish reason, usage, an error, a tool call, a field that changed) is parsed in
full, and the next plain chunk teaches the shape again.

Leniency, knowingly: a raw control character inside the text (which JSON forbids,
and no upstream sends) is taken as text rather than the chunk ignored.
"""

from __future__ import annotations

from typing import Any

import orjson

_PROBE = "parley-shape-probe"
# Shapes learnt one after another that fitted no chunk: the stream's chunks differ in
# more than their text (say, a counter), so learning is only cost; it stops.
_FRUITLESS_LEARNS = 4


class TextChunkShape:
    __slots__ = ("_fits", "_fruitless", "_prefix", "_suffix")

    def __init__(self) -> None:
        self._prefix = ""
        self._suffix = ""
        self._fits = 0  # chunks the current shape read
        self._fruitless = 0

    def text(self, data: str) -> str | None:
        """The text of ``data`` when it is the learnt chunk with other text, else None."""
        prefix, suffix = self._prefix, self._suffix
        if not prefix or not data.startswith(prefix) or not data.endswith(suffix):
            return None
        end = len(data) - len(suffix)
        if end < len(prefix):
            return None  # prefix and suffix overlap: not the learnt chunk
        body = data[len(prefix) : end]
        if '"' in body or "\\" in body:
            try:
                text = orjson.loads('"' + body + '"')
            except orjson.JSONDecodeError:
                return None  # not one string (an unescaped quote): not the learnt chunk
        else:
            text = body
        self._fits += 1
        return text  # type: ignore[no-any-return]

    def learn(self, data: str, chunk: dict[str, Any], text: str) -> None:
        """``data`` parsed in full is ``chunk``, one choice whose delta's ``content`` is
        ``text`` (a non-empty string)."""
        if self._fruitless >= _FRUITLESS_LEARNS:
            return
        if self._prefix:
            self._fruitless = 0 if self._fits else self._fruitless + 1
        self._prefix = self._suffix = ""
        self._fits = 0
        literal = orjson.dumps(text).decode()
        at = data.find(literal)
        if at < 0 or data.find(literal, at + 1) >= 0:
            return  # written otherwise than orjson writes it, or not only there
        prefix, suffix = data[: at + 1], data[at + len(literal) - 1 :]
        try:
            probe = orjson.loads(prefix + _PROBE + suffix)
        except orjson.JSONDecodeError:
            return
        delta = chunk["choices"][0]["delta"]
        delta["content"] = _PROBE
        try:
            if probe != chunk:
                return  # the text sat elsewhere than the content (or broke the JSON)
        finally:
            delta["content"] = text
        self._prefix, self._suffix = prefix, suffix
