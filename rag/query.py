"""Turning a chat message into a full-text query, for PostgreSQL and for SQLite FTS5.

A user's message is not query syntax: quotes, ``-``, ``OR``, ``NEAR``, ``*`` and
parentheses must match as words or not at all, never as operators, and a long
question must not require every one of its words. Both builders therefore keep only
word tokens (letters, digits, underscore, in any script), drop English stop words
and one-letter tokens, deduplicate, keep the first ``MAX_TERMS``, and OR them:

- PostgreSQL: ``"alpha or beta"`` for ``websearch_to_tsquery('simple'|'english', …)``,
  whose only operators are quotes, ``or`` and a leading ``-``, none of which survive
  the token filter except the ``or`` we put in.
- SQLite FTS5: ``"alpha" OR "beta"``; every term is a quoted string, so ``NEAR``,
  ``AND``, ``*`` or ``^`` inside it are plain text.

An empty string means "no usable terms": skip the lexical search.
"""

from __future__ import annotations

import re

MAX_TERMS = 16

_STOP_WORDS_TEXT = """a about above after again all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few
    for from further had has have having he her here hers herself him himself his how
    i if in into is it its itself just me more most my myself no nor not of off on once
    only or other our ours ourselves out over own same she should so some such than that
    the their theirs them themselves then there these they this those through to too
    under until up very was we were what when where which while who whom why will with
    would you your yours yourself yourselves please tell know want need like get"""
STOP_WORDS = frozenset(_STOP_WORDS_TEXT.split())

_WORD = re.compile(r"\w+", re.UNICODE)


def query_terms(text: str) -> list[str]:
    """Lower-cased content words of ``text``, deduplicated, at most ``MAX_TERMS``."""
    terms: list[str] = []
    seen: set[str] = set()
    for match in _WORD.finditer(text.lower()):
        term = match.group(0).strip("_")
        if len(term) < 2 or term in STOP_WORDS or term in seen:
            continue
        seen.add(term)
        terms.append(term)
        if len(terms) == MAX_TERMS:
            break
    return terms


def postgres_query(text: str) -> str:
    """Text for ``websearch_to_tsquery``: content words joined by ``or``."""
    return " or ".join(query_terms(text))


def sqlite_fts_query(text: str) -> str:
    """An FTS5 MATCH expression: each content word quoted, joined by ``OR``."""
    return " OR ".join('"' + term.replace('"', '""') + '"' for term in query_terms(text))
