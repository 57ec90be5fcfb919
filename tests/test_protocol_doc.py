"""docs/protocol.md says what the code does: its generated tables match the code."""

from __future__ import annotations

from pathlib import Path

import pytest

from errors import ERROR_CODES
from realtime.close_codes import CLOSE_CODE_DOCS, CloseCode
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


def test_every_close_code_is_documented_and_the_page_imports_the_same_names() -> None:
    document = protocol_doc.DOCUMENT.read_text(encoding="utf-8")
    page = protocol_doc.CLOSE_CODES_JS.read_text(encoding="utf-8")

    for code in CloseCode:
        assert code in CLOSE_CODE_DOCS
        assert f"| {code.value} | `{code.name}` |" in document
        assert f"  {code.name}: {code.value},\n" in page
    assert (
        'from "./close_codes.js"' in (protocol_doc.CLOSE_CODES_JS.parent / "socket.js").read_text()
    )


def test_a_document_without_a_generated_section_fails_the_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stale = tmp_path / "protocol.md"
    stale.write_text("<!-- generated:client-frames -->\n<!-- /generated:client-frames -->\n")
    monkeypatch.setattr(protocol_doc, "DOCUMENT", stale)

    assert protocol_doc.main(["--check"]) == 1
