"""The tables of docs/protocol.md that the code can tell, kept in step with it.

Each generated table sits between ``<!-- generated:NAME -->`` and
``<!-- /generated:NAME -->`` in the document. ``python -m server.protocol_doc`` rewrites
them from the code; ``--check`` (run by the test suite) fails when the document has
drifted from the code, so a new frame field or error code cannot go undocumented.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

from errors import ERROR_CLASSES
from realtime.frames import CLIENT_FRAME_REPLIES, CLIENT_FRAMES

DOCUMENT = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
_TYPE_NAMES = {str: "string", int: "integer", bool: "boolean"}


def _fields(spec: dict[str, tuple[type, ...]]) -> str:
    if not spec:
        return "—"
    return ", ".join(
        f"`{name}` ({' or '.join(_TYPE_NAMES.get(t, t.__name__) for t in types)})"
        for name, types in spec.items()
    )


def client_frames_table() -> str:
    rows = ["| type | required | optional | reply |", "| --- | --- | --- | --- |"]
    for frame_type, (required, optional) in CLIENT_FRAMES.items():
        reply = CLIENT_FRAME_REPLIES.get(frame_type, "—")
        rows.append(f"| `{frame_type}` | {_fields(required)} | {_fields(optional)} | `{reply}` |")
    return "\n".join(rows)


def error_codes_table() -> str:
    rows = ["| code | HTTP | meaning | what to do |", "| --- | --- | --- | --- |"]
    for cls in ERROR_CLASSES:
        rows.append(f"| `{cls.code}` | {cls.status} | {cls.meaning} | {cls.advice} |")
    return "\n".join(rows)


TABLES: dict[str, Callable[[], str]] = {
    "client-frames": client_frames_table,
    "error-codes": error_codes_table,
}


def render(document: str) -> str:
    """The document with every generated table rewritten from the code."""
    for name, table in TABLES.items():
        pattern = re.compile(
            rf"(<!-- generated:{name} -->\n)(?:.*?\n)?(<!-- /generated:{name} -->)", re.DOTALL
        )
        match = pattern.search(document)
        if match is None:
            raise ValueError(f"docs/protocol.md has no generated:{name} section")
        start, end = match.span()
        section = match.group(1) + table() + "\n" + match.group(2)
        document = document[:start] + section + document[end:]
    return document


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the document drifted")
    args = parser.parse_args(argv)
    current = DOCUMENT.read_text(encoding="utf-8")
    wanted = render(current)
    if args.check:
        if wanted != current:
            print("docs/protocol.md drifted: run python -m server.protocol_doc", file=sys.stderr)
            return 1
        return 0
    DOCUMENT.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
