"""Checking an uploaded document and cutting it into retrievable chunks.

A document is UTF-8 text or Markdown. ``validate_document`` refuses what is not:
over the size limit (``TooLarge``), NUL bytes, invalid UTF-8 or mostly
non-printable characters (``BadRequest``, "binary"), nothing but whitespace
(``BadRequest``).

``chunk_document`` cuts along the document's own structure first, then by tokens:

1. Markdown ATX headings (``#`` … ``######``, outside fenced code) open sections; each
   chunk remembers its heading path, e.g. ``("Install", "On Linux")``.
2. Within a section, paragraphs (blank-line separated; a fenced code block counts as
   one paragraph) are packed greedily up to ``target_tokens``.
3. A paragraph longer than that is cut into token windows of ``target_tokens``.
4. Each chunk after the first of a section starts with the last ``overlap_tokens`` of
   the previous one, so that a sentence cut at a boundary is found from either side.

Ordinals count chunks from 0 across the whole document, in reading order.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from errors import BadRequest, TooLarge
from llm.tokens import count_text, encoding

TARGET_TOKENS = 300
OVERLAP_TOKENS = 40
MAX_NON_PRINTABLE_SHARE = 0.05

_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$")
_FENCE = re.compile(r"^[ \t]{0,3}(```|~~~)")


@dataclass(frozen=True, slots=True)
class Chunk:
    ordinal: int
    heading_path: tuple[str, ...]
    text: str
    tokens: int


def validate_document(data: bytes | str, *, max_bytes: int) -> str:
    """The document's text, or the reason it cannot be one (see module docstring)."""
    raw = data.encode("utf-8", errors="surrogatepass") if isinstance(data, str) else data
    if len(raw) > max_bytes:
        raise TooLarge(f"document is larger than {max_bytes} bytes")
    if b"\x00" in raw:
        raise BadRequest("document looks binary (NUL bytes); upload UTF-8 text or Markdown")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadRequest("document is not valid UTF-8 text") from exc
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise BadRequest("document is empty")
    odd = sum(1 for ch in text if ch not in "\n\t" and not ch.isprintable())
    # Format characters (zero-width joiners, bidi marks) are not printable yet are
    # normal in real text; control characters are what binary data is made of.
    controls = sum(1 for ch in text if unicodedata.category(ch) == "Cc" and ch not in "\n\t")
    if controls / len(text) > MAX_NON_PRINTABLE_SHARE or odd / len(text) > 0.3:
        raise BadRequest("document looks binary (non-printable characters)")
    return text


def _sections(text: str) -> list[tuple[tuple[str, ...], str]]:
    """(heading path, body) pairs in reading order; the heading line stays in the body."""
    sections: list[tuple[tuple[str, ...], list[str]]] = [((), [])]
    stack: list[tuple[int, str]] = []
    in_fence: str | None = None
    for line in text.split("\n"):
        fence = _FENCE.match(line)
        if fence:
            marker = fence.group(1)
            in_fence = None if in_fence == marker else (in_fence or marker)
        heading = None if in_fence or fence else _HEADING.match(line)
        if heading:
            level, title = len(heading.group(1)), heading.group(2).strip()
            while stack and stack[-1][0] >= level:
                stack.pop()
            stack.append((level, title))
            sections.append((tuple(t for _, t in stack), []))
        sections[-1][1].append(line)
    return [(path, "\n".join(lines).strip()) for path, lines in sections if "".join(lines).strip()]


def _paragraphs(body: str) -> list[str]:
    """Blank-line separated blocks, a fenced code block kept whole."""
    paragraphs: list[str] = []
    current: list[str] = []
    in_fence: str | None = None
    for line in body.split("\n"):
        fence = _FENCE.match(line)
        if fence:
            marker = fence.group(1)
            in_fence = None if in_fence == marker else (in_fence or marker)
        if not line.strip() and in_fence is None:
            if current:
                paragraphs.append("\n".join(current))
                current = []
            continue
        current.append(line)
    if current:
        paragraphs.append("\n".join(current))
    return paragraphs


def _windows(text: str, size: int, overlap: int) -> list[str]:
    tokens = encoding().encode(text, disallowed_special=())
    step = max(1, size - overlap)
    pieces = []
    for start in range(0, len(tokens), step):
        pieces.append(encoding().decode(tokens[start : start + size]))
        if start + size >= len(tokens):
            break
    return pieces


def _tail(text: str, tokens: int) -> str:
    encoded = encoding().encode(text, disallowed_special=())
    return encoding().decode(encoded[-tokens:]) if tokens > 0 else ""


def _pack(paragraphs: list[str], target: int, overlap: int) -> list[str]:
    pieces: list[str] = []
    for paragraph in paragraphs:
        if count_text(paragraph) > target:
            pieces.extend(_windows(paragraph, target, overlap))
        else:
            pieces.append(paragraph)
    chunks: list[str] = []
    current = ""
    for piece in pieces:
        candidate = f"{current}\n\n{piece}" if current else piece
        if current and count_text(candidate) > target:
            chunks.append(current)
            tail = _tail(current, overlap)
            current = f"{tail}\n\n{piece}" if tail.strip() else piece
        else:
            current = candidate
    if current:
        chunks.append(current)
    return chunks


def chunk_document(
    text: str, *, target_tokens: int = TARGET_TOKENS, overlap_tokens: int = OVERLAP_TOKENS
) -> list[Chunk]:
    """Overlapping chunks in reading order (rules in the module docstring)."""
    if overlap_tokens >= target_tokens:
        raise ValueError("overlap_tokens must be smaller than target_tokens")
    chunks: list[Chunk] = []
    for path, body in _sections(text):
        for piece in _pack(_paragraphs(body), target_tokens, overlap_tokens):
            piece = piece.strip()
            if piece:
                chunks.append(Chunk(len(chunks), path, piece, count_text(piece)))
    return chunks
