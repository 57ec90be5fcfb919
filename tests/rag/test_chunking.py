from __future__ import annotations

import itertools

import pytest

from errors import BadRequest, TooLarge
from llm.tokens import count_text
from rag.chunking import chunk_document, validate_document

DOC = """# Guide

Intro paragraph about Parley.

## Install

Run the installer.

### On Linux

Use the package manager.

```sh
# not a heading, a shell comment
apt install parley
```

## Use

Start the server.
"""


def test_chunks_remember_their_heading_path_and_ordinal() -> None:
    chunks = chunk_document(DOC)

    assert [c.heading_path for c in chunks] == [
        ("Guide",),
        ("Guide", "Install"),
        ("Guide", "Install", "On Linux"),
        ("Guide", "Use"),
    ]
    assert [c.ordinal for c in chunks] == [0, 1, 2, 3]
    assert "apt install parley" in chunks[2].text
    assert "# not a heading" in chunks[2].text


def test_text_before_the_first_heading_has_an_empty_path() -> None:
    [chunk] = chunk_document("Just a note without headings.")
    assert chunk.heading_path == ()


def test_long_sections_are_packed_into_overlapping_chunks_near_the_target() -> None:
    paragraphs = [f"Paragraph {n} " + "lorem ipsum dolor sit amet " * 20 for n in range(30)]
    chunks = chunk_document("\n\n".join(paragraphs), target_tokens=300, overlap_tokens=40)

    assert len(chunks) > 5
    assert all(c.tokens <= 300 + 40 + 4 for c in chunks)
    assert all(c.tokens == count_text(c.text) for c in chunks)
    for previous, current in itertools.pairwise(chunks):
        tail = previous.text[-40:]
        assert tail.strip()[-20:] in current.text


def test_one_huge_paragraph_is_cut_into_token_windows() -> None:
    text = "word " * 2000
    chunks = chunk_document(text, target_tokens=300, overlap_tokens=40)

    assert len(chunks) >= 7
    assert all(c.tokens <= 344 for c in chunks)


def test_overlap_must_be_smaller_than_the_target() -> None:
    with pytest.raises(ValueError):
        chunk_document("x", target_tokens=10, overlap_tokens=10)


def test_a_valid_document_is_returned_as_text_without_bom_or_crlf() -> None:
    data = "\ufeffTitle\r\nLine — with ünïcode and emoji 🎉".encode()
    assert validate_document(data, max_bytes=1000) == "Title\nLine — with ünïcode and emoji 🎉"


@pytest.mark.parametrize(
    "data",
    [
        b"PK\x03\x04\x00\x00binary zip",
        b"\xff\xfe\xfa not utf-8",
        bytes(range(1, 32)) * 10 + b"abc",
    ],
)
def test_binary_looking_documents_are_bad_requests(data: bytes) -> None:
    with pytest.raises(BadRequest):
        validate_document(data, max_bytes=10_000)


def test_an_empty_document_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="empty"):
        validate_document(b" \n\t ", max_bytes=100)


def test_an_oversized_document_is_too_large() -> None:
    with pytest.raises(TooLarge):
        validate_document(b"a" * 101, max_bytes=100)
