from __future__ import annotations

import sqlite3

import asyncpg
import pytest

from llm.tokens import count_text
from rag.query import postgres_query, query_terms, sqlite_fts_query
from rag.ranking import Passage, format_passages, fuse
from tests.services import require_postgres

HOSTILE = [
    'he said "hello',
    "NEAR(a b) OR * AND NOT",
    "(((unbalanced",
    "col:value ^start -minus",
    "'; DROP TABLE messages; --",
    "émigré naïve 東京 tower",
]


def test_fusion_prefers_items_ranked_well_by_both_lists() -> None:
    lexical = ["a", "b", "c"]
    semantic = ["b", "d", "a"]
    assert fuse([lexical, semantic]) == ["b", "a", "d", "c"]


def test_fusion_of_nothing_is_nothing() -> None:
    assert fuse([]) == []
    assert fuse([[], []]) == []


def test_passages_are_labelled_with_their_source() -> None:
    text = format_passages(
        [
            Passage("document", "d1", "Manual", "Press the red button.", 0.9),
            Passage("history", "m7", "", "We agreed on Tuesday.", 0.5, seq=7),
        ],
        budget_tokens=200,
    )
    assert "[document “Manual”]\nPress the red button." in text
    assert "[earlier message #7]\nWe agreed on Tuesday." in text


def test_passages_stay_within_the_budget_dropping_the_least_relevant() -> None:
    passages = [
        Passage("document", str(n), f"Doc {n}", "text " * 100, 1.0 - n / 10) for n in range(6)
    ]
    text = format_passages(passages, budget_tokens=250)
    assert count_text(text) <= 250
    assert "Doc 0" in text and "Doc 5" not in text
    assert format_passages(passages, budget_tokens=10) == ""


def test_query_terms_drop_stop_words_and_duplicates() -> None:
    assert query_terms("What is the price of the Parley parley server?") == [
        "price",
        "parley",
        "server",
    ]


@pytest.mark.parametrize("text", HOSTILE)
def test_sqlite_queries_from_hostile_text_always_parse(text: str) -> None:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE docs USING fts5(body)")
    db.execute("INSERT INTO docs VALUES ('near the tower in 東京 a naïve value')")
    query = sqlite_fts_query(text)
    if query:
        db.execute("SELECT rowid FROM docs WHERE docs MATCH ?", (query,)).fetchall()


def test_sqlite_query_quotes_keywords_as_plain_terms() -> None:
    assert sqlite_fts_query("NEAR(a b) OR star*") == '"near" OR "star"'


def test_postgres_query_has_no_operators_but_or() -> None:
    assert postgres_query('"quoted -minus OR thing') == "quoted or minus or thing"
    assert postgres_query("the and of") == ""


async def test_postgres_queries_from_hostile_text_always_parse() -> None:
    dsn = require_postgres().replace("postgresql+asyncpg://", "postgresql://")
    connection = await asyncpg.connect(dsn)
    try:
        for text in HOSTILE:
            await connection.fetchval(
                "SELECT to_tsvector('simple', 'tower in 東京')"
                " @@ websearch_to_tsquery('simple', $1)",
                postgres_query(text),
            )
    finally:
        await connection.close()
