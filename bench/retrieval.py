"""Benchmark: retrieval and context building for one turn, on PostgreSQL.

    .venv/bin/python -m bench.retrieval [--documents 1000] [--questions 300]

Loads ``--documents`` synthetic Markdown documents (Zipf-distributed vocabulary,
sections with headings, ~3 chunks each) into ONE session of a scratch database,
through ``DocumentService`` (validation, chunking, one transaction per document),
runs ``ANALYZE``, then times, per question, ``Retriever.retrieve`` followed by
``llm.context.build_context`` with memory, a summary, retrieved passages and ten
recent turns, as the generation runner does for a turn. Prints p50/p95/p99 and the
plan PostgreSQL picks for the full-text query, and writes the section
``## Retrieval and context (issue 5)`` of ``docs/benchmarks.md`` (other sections are
left alone). The scratch database is dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import time
import uuid
from pathlib import Path

import asyncpg
from sqlalchemy import text
from sqlalchemy.dialects import postgresql

from db import migrate
from db.engine import Database
from db.repositories import sessions as sessions_repo
from db.repositories import users as users_repo
from db.repositories.retrieval import lexical_statement
from llm.context import build_context
from rag.query import postgres_query
from rag.ranking import format_passages
from rag.retrieval import Retriever
from server.services.accounts import Principal
from server.services.documents import DocumentService
from server.services.sessions import SessionService

POSTGRES_URL = os.environ.get(
    "PARLEY_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
RESULTS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
SECTION = "## Retrieval and context (issue 5)"
TARGET_P95_MS = 20.0
PASSAGE_BUDGET = 1200
WINDOW, RESERVE = 16_384, 1024

SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ne",
    "ru",
    "sa",
    "to",
    "vi",
    "be",
    "da",
    "fe",
    "go",
    "hu",
    "ja",
    "ki",
    "lu",
    "mo",
    "na",
    "pe",
    "ri",
]
FILLER = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "for",
    "on",
    "with",
    "as",
    "by",
    "that",
    "this",
    "it",
    "from",
    "are",
    "be",
    "at",
    "or",
]


def vocabulary(rng: random.Random, size: int = 6000) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))))
    return sorted(words)


class Corpus:
    def __init__(self, seed: int = 5) -> None:
        self.rng = random.Random(seed)
        self.words = vocabulary(self.rng)
        self.weights = [1.0 / (rank + 1) for rank in range(len(self.words))]

    def sentence(self, n: int) -> str:
        picked = self.rng.choices(self.words, self.weights, k=n)
        mixed = [w if self.rng.random() > 0.3 else self.rng.choice(FILLER) for w in picked]
        return " ".join(mixed).capitalize() + "."

    def document(self, n: int) -> tuple[str, str]:
        title = " ".join(self.rng.choices(self.words[200:], k=3)).title() + f" ({n})"
        sections = []
        for _ in range(self.rng.randint(2, 4)):
            heading = " ".join(self.rng.choices(self.words[100:], k=2))
            paragraphs = [
                " ".join(self.sentence(self.rng.randint(8, 18)) for _ in range(5))
                for _ in range(self.rng.randint(1, 3))
            ]
            sections.append(f"## {heading}\n\n" + "\n\n".join(paragraphs))
        return title, f"# {title}\n\n" + "\n\n".join(sections)

    def question(self) -> str:
        terms = self.rng.choices(self.words[50:3000], k=self.rng.randint(2, 5))
        return f"Tell me about {' and '.join(terms)}?"


async def scratch_database() -> tuple[str, str]:
    name = f"parley_bench_{uuid.uuid4().hex[:8]}"
    admin = POSTGRES_URL.replace("postgresql+asyncpg", "postgresql")
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name, POSTGRES_URL.rsplit("/", 1)[0] + "/" + name


async def drop_database(name: str) -> None:
    conn = await asyncpg.connect(POSTGRES_URL.replace("postgresql+asyncpg", "postgresql"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def run(documents: int, questions: int) -> dict[str, object]:
    name, url = await scratch_database()
    database = Database(url, pool_size=4)
    try:
        await migrate.upgrade(database)
        async with database.transaction() as session:
            user = await users_repo.create_user(
                session, email="bench@example.com", name="Bench", password_hash=None
            )
            chat = await sessions_repo.create_session(
                session, owner_id=user.id, title="bench", model=None, system_prompt=None
            )
        principal = Principal(user.id, "Bench", "user", None)
        service = DocumentService(
            database, SessionService(database, idle_expiry_s=1800), None, max_bytes=1 << 20
        )
        corpus = Corpus()
        started = time.perf_counter()
        chunks = 0
        for n in range(documents):
            title, body = corpus.document(n)
            created = await service.upload_text(principal, chat.id, title=title, content=body)
            chunks += int(created["chunks"])
        load_s = time.perf_counter() - started
        async with database.engine.begin() as conn:
            await conn.execute(text("ANALYZE chunks"))
            await conn.execute(text("ANALYZE documents"))

        retriever = Retriever(database)
        turns = [
            {"role": "user" if n % 2 == 0 else "assistant", "content": corpus.sentence(30)}
            for n in range(10)
        ]
        memory = [f"(fact) {corpus.sentence(8)}" for _ in range(8)]
        summary = " ".join(corpus.sentence(20) for _ in range(6))
        asked = [corpus.question() for _ in range(questions)]
        for question in asked[:20]:  # warm the pool, the plan cache and tiktoken
            await retriever.retrieve(chat.id, question, budget_tokens=PASSAGE_BUDGET)
        timings, retrieval_only, found = [], [], 0
        for question in asked:
            t0 = time.perf_counter()
            passages = await retriever.retrieve(
                chat.id, question, budget_tokens=PASSAGE_BUDGET, exclude_after_seq=0
            )
            retrieval_only.append((time.perf_counter() - t0) * 1000)
            build_context(
                system_prompt="You are Parley's assistant.",
                memory_items=memory,
                summary=summary,
                passages_text=format_passages(passages, PASSAGE_BUDGET),
                search_text="",
                search_note=None,
                history_turns=[*turns, {"role": "user", "content": question}],
                window_tokens=WINDOW,
                reply_reserve_tokens=RESERVE,
            )
            timings.append((time.perf_counter() - t0) * 1000)
            found += bool(passages)
        plan = await explain(database, chat.id, asked[0])
        return {
            "documents": documents,
            "chunks": chunks,
            "load_s": load_s,
            "questions": questions,
            "found": found,
            "p50": statistics.median(timings),
            "p95": percentile(timings, 95),
            "p99": percentile(timings, 99),
            "retrieve_p50": statistics.median(retrieval_only),
            "retrieve_p95": percentile(retrieval_only, 95),
            "plan": plan,
        }
    finally:
        await database.dispose()
        await drop_database(name)


async def explain(database: Database, session_id: uuid.UUID, question: str) -> list[str]:
    statement = lexical_statement(
        "postgresql", session_id, postgres_query(question), limit=20, exclude_after_seq=0
    )
    compiled = statement.compile(
        dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}
    )
    async with database.engine.connect() as conn:
        rows = await conn.execute(text(f"EXPLAIN (ANALYZE, COSTS OFF) {compiled}"))
        return [str(row[0]) for row in rows]


def render(result: dict[str, object]) -> str:
    plan = "\n".join(f"    {line}" for line in result["plan"])  # type: ignore[attr-defined]
    uses_index = "ix_chunks_fts" in plan
    met = float(result["p95"]) < TARGET_P95_MS  # type: ignore[arg-type]
    target = f"< {TARGET_P95_MS:.0f} ms ({'met' if met else 'NOT met'})"
    return f"""{SECTION}

`python -m bench.retrieval` on {platform.machine()}, Python {platform.python_version()},
PostgreSQL on 127.0.0.1 (2 shared cores). One session holding {result["documents"]}
synthetic Markdown documents ({result["chunks"]} chunks, Zipf vocabulary), loaded
through `DocumentService` in {result["load_s"]:.1f} s. Per question: `Retriever.retrieve`
(full-text only: no embeddings endpoint configured) + `format_passages` +
`llm.context.build_context` (8 memory items, a summary, 10 recent turns, a
{WINDOW}-token window). {result["questions"]} questions of 2-5 content words;
{result["found"]} found at least one passage.

| p50 | p95 | p99 | target p95 |
| --- | --- | --- | --- |
| {result["p50"]:.1f} ms | {result["p95"]:.1f} ms | {result["p99"]:.1f} ms | {target} |

`Retriever.retrieve` alone: p50 {result["retrieve_p50"]:.1f} ms, p95
{result["retrieve_p95"]:.1f} ms; the rest is `format_passages` + `build_context` (token
counting). What brought this under the target (it was p95 30 ms):

- migration 0002: a stored generated column `chunks.search_vector`
  (`to_tsvector('english', text)`), GIN-indexed as `ix_chunks_fts`, so `ts_rank_cd`
  reads stored vectors instead of parsing every matching chunk's text again;
- that index is built with `fastupdate = off`: with GIN's pending list, freshly loaded
  chunks sat unsorted in the list (1,800 of them here), every search scanned it, and
  the planner chose a sequential scan (6 ms for the query below instead of 0.5 ms);
- `db.repositories.retrieval.lexical_search` builds its statement once per shape with
  every value a parameter and runs it as Core on the session's connection: building
  and ORM-executing a fresh statement per question cost more than the query itself.

The full-text query {"uses" if uses_index else "does NOT use"} the GIN index
`ix_chunks_fts` on `search_vector` (plan for the first question):

{plan}
"""


def write_section(section: str) -> None:
    existing = RESULTS.read_text() if RESULTS.exists() else "# Benchmarks\n"
    start = existing.find(SECTION)
    if start == -1:
        updated = existing.rstrip("\n") + "\n\n" + section
    else:
        end = existing.find("\n## ", start + len(SECTION))
        tail = existing[end + 1 :] if end != -1 else ""
        updated = existing[:start] + section + ("\n" + tail if tail else "")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(updated)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=1000)
    parser.add_argument("--questions", type=int, default=300)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    result = asyncio.run(run(args.documents, args.questions))
    section = render(result)
    print(section)
    if not args.no_write:
        write_section(section)


if __name__ == "__main__":
    main()
