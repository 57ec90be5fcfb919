"""The events of a server-sent event stream, a read at a time, in one pass per read.

httpx-sse's ``aiter_sse`` decodes a body line by line in Python, through two
generators per line; a model streaming tens of thousands of tokens a second spent
more time there than in anything else on the relay. Nearly every event of a model's
stream is a single ``data: ...`` line, so ``EventSplitter`` cuts a read into events
with one ``str.split`` and takes each single-line ``data`` event with one check. Any
other event (a comment, several fields, ``event:`` / ``id:`` / ``retry:`` lines, no
space after the colon) goes line by line through httpx-sse's own ``SSEDecoder``, and
a body with ``\\r`` line ends goes whole through httpx-sse's decoders from the first
read that has one, so every event reads exactly as ``aiter_sse`` would read it.
"""

from __future__ import annotations

# httpx-sse's decoders (what its aiter_sse runs), for everything but the common event.
from httpx_sse._decoders import SSEDecoder, SSELineDecoder

_DATA = "data: "


class EventSplitter:
    """The ``data`` of each event completed by the text fed so far, in order."""

    __slots__ = ("_events", "_lines", "_rest")

    def __init__(self) -> None:
        self._rest = ""  # the start of an event that has not ended yet
        self._events = SSEDecoder()
        self._lines: SSELineDecoder | None = None  # once the body used "\r"

    def decode(self, text: str) -> list[str]:
        if self._lines is not None or "\r" in text:
            return self._decode_lines(text)
        # Events end at a blank line: "\n\n" ends one (with "\n" line ends only).
        pieces = (self._rest + text).split("\n\n") if self._rest else text.split("\n\n")
        self._rest = pieces.pop()
        batch: list[str] = []
        for piece in pieces:
            if piece.startswith(_DATA) and "\n" not in piece:
                batch.append(piece[6:])
            else:
                batch += self._decode_event(piece)
        return batch

    def flush(self) -> list[str]:
        """At the body's end. An event it ended in the middle of is dropped, as the
        SSE standard says (and as httpx-sse does)."""
        if self._lines is None:
            # The held-back text's whole lines: only a blank one first can end an event
            # (the empty one httpx-sse makes after an ``id:``).
            rest, self._rest = self._rest, ""
            return self._dispatch(rest.split("\n")[:-1])
        return self._dispatch(self._lines.flush())

    def _decode_event(self, piece: str) -> list[str]:
        """Any other event: its lines, then the blank line that ended it. (An empty
        piece is two blank lines: after an ``id:``, httpx-sse makes an event of each.)"""
        lines = piece.split("\n")
        lines.append("")
        return self._dispatch(lines)

    def _decode_lines(self, text: str) -> list[str]:
        if self._lines is None:
            # From here on, as httpx-sse: what was held back starts at an event's start.
            self._lines = SSELineDecoder()
            text, self._rest = self._rest + text, ""
        return self._dispatch(self._lines.decode(text))

    def _dispatch(self, lines: list[str]) -> list[str]:
        return [event.data for line in lines if (event := self._events.decode(line)) is not None]
