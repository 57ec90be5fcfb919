"""docs/protocol.md says what the code does: its generated tables match the code."""

from __future__ import annotations

from errors import ERROR_CODES
from realtime.frames import CLIENT_FRAMES
from server import protocol_doc


def test_the_generated_tables_of_the_protocol_document_match_the_code() -> None:
    assert protocol_doc.main(["--check"]) == 0, "run: python -m server.protocol_doc"


def test_every_frame_type_and_error_code_is_in_the_document() -> None:
    document = protocol_doc.DOCUMENT.read_text(encoding="utf-8")

    for frame_type in CLIENT_FRAMES:
        assert f"| `{frame_type}` |" in document
    for code in ERROR_CODES:
        assert f"| `{code}` |" in document


def test_a_drifted_table_is_rewritten_from_the_code() -> None:
    stale = "<!-- generated:client-frames -->\n| old |\n<!-- /generated:client-frames -->\n"
    stale += "<!-- generated:error-codes -->\n<!-- /generated:error-codes -->\n"

    fresh = protocol_doc.render(stale)

    assert "| old |" not in fresh
    assert "| `message` | `session_id` (string), `content` (string) |" in fresh
    assert "| `rate_limited` | 429 |" in fresh
