"""Everything the model is given for one answer, fitted into its window.

Order of work for a turn: the session and its rolling summary; fold the oldest turns
into the summary when the history outgrows the budget (``summarising``); memory;
retrieved passages (``retrieving``); web search (``searching``); then
``llm.context.build_context`` fits it all, in its documented order, so that no
request is larger than the window.

When to search: always when the message says ``search: true``; otherwise, for a
model known to support tool calling, the model decides (``WEB_SEARCH_TOOL`` is
offered and ``stream`` runs its call, see ``search.tool``); for any
other model, the plain ``search.service.should_search`` rule. Which models support
tools is ``ContextAssembler.tool_models`` (a collection of model ids) when set by
whoever knows (tests, operators), else the model catalogue. A search that fails leaves a note for
the model and a ``stream.status`` whose ``detail`` says search was unavailable.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, NamedTuple

from db.engine import Database
from db.repositories import messages as messages_repo
from db.repositories.messages import Turn, TurnHeader
from errors import Conflict, NotFound, ParleyError
from llm.context import build_context
from llm.provider import ChatEvent, ChatRequest
from llm.resilience import ResilientProvider
from llm.summarise import fold, plan_fold
from llm.tokens import count_text, message_tokens
from rag.ranking import format_passages
from search.service import WEB_SEARCH_TOOL, format_results, should_search
from search.tool import stream_with_search, unavailable_detail
from server.assistant.turn_cache import Snapshot, TurnCache, header_fits
from server.config import Settings

if TYPE_CHECKING:
    from rag.retrieval import Retriever
    from search.service import WebSearch
    from server.services.memory import MemoryService

log = logging.getLogger("parley.context")

DEFAULT_SYSTEM_PROMPT = (
    "You are Parley's assistant, answering in a shared chat room. Be concise and "
    "helpful. When web results or excerpts are given, cite their sources."
)
HISTORY_WINDOW = 400  # the newest messages considered for a turn
KEEP_RECENT_TURNS = 6
SUMMARY_SHARE = 0.2  # the summary may use up to this share of the budget
PASSAGES_TOKENS = 1500
SEARCH_TOKENS = 2000
Status = Callable[[str, str | None], Awaitable[None]]


@dataclass
class TurnContext:
    model: str
    fallbacks: list[str]
    messages: list[dict[str, Any]]
    prompt_tokens: int
    searched: bool
    tools: list[dict[str, Any]] | None = None  # offered to the model (tool calling)
    question: str = ""
    # The history's header when it was read before the question had a seq (a cached
    # copy or a read beside the store); None when the read came after the store.
    read_before_store: TurnHeader | None = None

    def fits(self, question_seq: int, revision: int) -> bool:
        """Whether the history this was built on is exactly what came before the
        question, now that its store said where it landed (``Snapshot.fits``)."""
        basis = self.read_before_store
        return basis is None or header_fits(basis, question_seq, revision)


def make_turn_cache(settings: Settings) -> TurnCache:
    return TurnCache(window=HISTORY_WINDOW, max_bytes=settings.context_cache_mb * 1_000_000)


class _Fitted(NamedTuple):
    """The history part of a context (``ContextAssembler._fit``)."""

    system_prompt: str
    summary: str | None
    covers: int  # the summary covers the turns up to this seq
    turns: list[dict[str, Any]]
    costs: list[int]  # tokens of each turn, then of the question
    has_passages: bool


class ContextAssembler:
    def __init__(
        self,
        database: Database,
        provider: ResilientProvider,
        settings: Settings,
        *,
        turns: TurnCache,
        web_search: WebSearch | None = None,
        memory: MemoryService | None = None,
        retriever: Retriever | None = None,
    ) -> None:
        self._db = database
        self._provider = provider
        self._settings = settings
        # This node's copy of recent turns (``make_turn_cache``).
        self.turns = turns
        self._web_search = web_search
        self._memory_service = memory
        self._retriever = retriever
        # Models known to support tool calling, when set; else the catalogue decides.
        self.tool_models: Collection[str] | None = None
        self._warming: set[uuid.UUID] = set()

    async def window_for(self, model: str) -> int:
        if self._settings.llm_context_length:
            return self._settings.llm_context_length
        try:
            length = await self._provider.context_length(model)
        except ParleyError:
            length = None
        return length or 8192

    async def assemble(
        self,
        session_id: uuid.UUID,
        user_id: uuid.UUID,
        current: dict[str, Any],
        *,
        force_search: bool,
        status: Status,
        reading: Callable[[], None] = lambda: None,
    ) -> TurnContext:
        """The request for answering ``current``, asked by ``user_id``.

        ``current`` may still be on its way to the database (its ``seq`` is then None):
        the assistant reads the context while the message is stored, from this node's
        copy when it has one (``TurnContext.fits`` says afterwards whether that was
        right). Otherwise the session, its summary and whether it has anything to
        retrieve from come in one query, the turns in a second; ``reading`` is called
        first then, and ``status`` before each slow stage.
        """
        question = str(current["content"])
        # While the question is being stored (no seq yet) the answer may start from
        # this node's copy of the history.
        copy = self.turns.get(session_id, user_id) if current.get("seq") is None else None
        # What is remembered about the user is read beside the history when that is a
        # database read; from the copy, it is read after it, so that nothing lets
        # other work (the question's store) take the loop before the request leaves.
        if copy is None:
            reading()  # tells the caller the request will not leave soon
        memory = None if copy is not None else asyncio.ensure_future(self._memory(user_id))
        try:
            header, recent = await self._history(session_id, user_id, current, copy)
            # Only a model the operator offers goes upstream (and is billed), even for a
            # session stored before LLM_MODELS was narrowed (Settings.model_for).
            model = self._settings.model_for(header.model)
            fallbacks = [m for m in self._settings.llm_fallback_models if m != model]
            window = await self.window_for(model)
            asked = _turn_dict(current)
            fitted = await self._fit(session_id, header, recent, asked, model, window, status)
            # Skipped outright for a session with no documents and nothing summarised.
            passages_text = (
                await self._passages(session_id, question, fitted.covers, status)
                if fitted.has_passages
                else ""
            )
            tools = await self._tools_for(model, force_search)
            memory_items = await memory if memory is not None else await self._memory(user_id)
        finally:
            if memory is not None:
                memory.cancel()
        search_text, search_note, searched = await self._search(
            question, force_search or (tools is None and _rule(current)), status
        )
        built = build_context(
            system_prompt=fitted.system_prompt,
            memory_items=memory_items,
            summary=fitted.summary,
            passages_text=passages_text,
            search_text=search_text,
            search_note=search_note,
            history_turns=[*fitted.turns, asked],
            window_tokens=window,
            reply_reserve_tokens=self._settings.llm_reply_reserve_tokens,
            history_costs=fitted.costs,
        )
        return TurnContext(
            model,
            fallbacks,
            built.messages,
            built.prompt_tokens,
            searched,
            tools,
            question,
            read_before_store=header if current.get("seq") is None else None,
        )

    async def _fit(
        self,
        session_id: uuid.UUID,
        header: TurnHeader,
        recent: list[Turn],
        asked: dict[str, Any],
        model: str,
        window: int,
        status: Status,
    ) -> _Fitted:
        """The history as the model is given it: when it takes more than its share of
        the window, its oldest turns are folded into the summary (announced as
        ``summarising``) and leave the turns."""
        budget = window - self._settings.llm_reply_reserve_tokens
        covers = header.summary_covers_seq or 0
        summary_text = header.summary
        # A failed answer with no text (stored so that it shows, with a retry) is
        # nothing the model said.
        live = [m for m in recent if m.seq > covers and m.content]
        turns = [{"role": m.role, "content": m.content} for m in live]
        # Counted once here for both the fold plan and the builder: counting 400
        # turns (cached texts) took 0.15 ms a pass in front of the request.
        costs = [message_tokens(turn) for turn in (*turns, asked)]
        system_prompt = header.system_prompt or DEFAULT_SYSTEM_PROMPT
        history = [{"role": "system", "content": system_prompt}, *turns, asked]
        folded = plan_fold(
            history,
            count_text(summary_text or "") if summary_text else 0,
            int(budget * 0.6),
            KEEP_RECENT_TURNS,
            costs=costs,
        )
        if not folded:
            return _Fitted(system_prompt, summary_text, covers, turns, costs, header.has_passages)
        await status("summarising", None)
        summary_text, covers = await self._fold(
            session_id,
            model,
            summary_text,
            turns[:folded],
            live[folded - 1].seq,
            max(64, int(budget * SUMMARY_SHARE)),
            window,
        )
        # has_passages: the folded turns were just indexed.
        return _Fitted(system_prompt, summary_text, covers, turns[folded:], costs[folded:], True)

    async def _history(
        self,
        session_id: uuid.UUID,
        user_id: uuid.UUID,
        current: dict[str, Any],
        copy: Snapshot | None,
    ) -> tuple[TurnHeader, list[Turn]]:
        """The session (the asker must be a member) and the turns before ``current``,
        from ``copy`` (this node's, taken while ``current`` has no seq) or the database."""
        current_id = uuid.UUID(str(current["id"]))
        seq: int | None = current.get("seq")
        # While the question is being stored (no seq yet), a retry of one stored before
        # must not ask the model again: the header (or the copy) says if its key is taken.
        retry_key = current.get("client_msg_id") if seq is None else None
        snapshot = copy
        if snapshot is None:
            snapshot = await self._read_history(session_id, user_id, current_id, retry_key)
            if snapshot.header.status == "closed":
                raise Conflict("the session is closed; restore it to write again")
            if snapshot.header.already_sent:
                raise Conflict("this message was already sent")
            self.turns.put(session_id, snapshot, user_id)
        elif retry_key is not None and snapshot.holds_key(retry_key, current_id):
            # Stored messages stay stored: the question's own store will say the same.
            raise Conflict("this message was already sent")
        # A copy never says "closed" (those are not kept); if the session was closed
        # since, the question's store refuses it and this answer is abandoned.
        header = snapshot.header
        # UUIDs compare in Python code, their ints in C: 400 turns took 0.16 ms, now 0.03.
        current_int = current_id.int
        return header, [
            turn
            for turn in snapshot.turns
            if turn.id.int != current_int and (seq is None or turn.seq < seq)
        ]

    def needs_warming(self, session_id: uuid.UUID, member_id: uuid.UUID) -> bool:
        """``member_id``, a checked member, just joined the session here: True when its
        history should be read for this node's copy (then call ``warm``). Once per
        session while the copy lasts, however many members join."""
        if self.turns.admit(session_id, member_id) or session_id in self._warming:
            return False
        self._warming.add(session_id)
        return True

    async def warm(self, session_id: uuid.UUID, member_id: uuid.UUID) -> None:
        """Read a session's history into this node's copy, so that the first question
        after a join starts from it (after ``needs_warming`` said so)."""
        try:
            snapshot = await self._read_history(session_id, member_id, uuid.uuid4(), None)
        except ParleyError:
            return  # gone or left since the join, or the database is down
        except Exception:
            log.exception("reading session %s for this node's copy failed", session_id)
            return
        finally:
            self._warming.discard(session_id)
        if snapshot.header.status != "closed":
            self.turns.put(session_id, snapshot, member_id)

    async def _read_history(
        self,
        session_id: uuid.UUID,
        user_id: uuid.UUID,
        question_id: uuid.UUID,
        retry_key: str | None,
    ) -> Snapshot:
        async with self._db.read() as session:
            header = await messages_repo.turn_header(
                session, session_id, user_id, question_id=question_id, retry_key=retry_key
            )
            if header is None:
                raise NotFound("session not found")
            # Bounded by the header's last_seq: on PostgreSQL each statement sees its own
            # moment, and the copy must not hold a message its header does not know of.
            recent = await messages_repo.recent_turns(
                session, session_id, header.last_seq + 1, HISTORY_WINDOW
            )
        return Snapshot(header, tuple(recent))

    def stream(
        self, request: ChatRequest, turn: TurnContext, status: Status
    ) -> AsyncGenerator[ChatEvent, None]:
        """The model's answer for ``turn``; runs a web search the model calls for."""
        web_search = self._web_search
        if not turn.tools or web_search is None:
            return self._provider.stream(request, fallbacks=turn.fallbacks)
        return stream_with_search(
            self._provider,
            replace(request, tools=turn.tools),
            fallbacks=turn.fallbacks,
            searcher=web_search,
            question=turn.question,
            status=status,
            budget_tokens=SEARCH_TOKENS,
        )

    async def supports_tools(self, model: str) -> bool:
        """``tool_models`` when set (tests, operators), else OpenRouter's
        ``/models`` (``supported_parameters`` lists ``tools``)."""
        listed = self.tool_models
        if listed is not None:
            return model in listed
        probe = getattr(self._provider, "supports_tools", None)
        try:
            return bool(probe is not None and await probe(model))
        except ParleyError:
            return False

    async def _tools_for(self, model: str, force_search: bool) -> list[dict[str, Any]] | None:
        """The tool list to offer, or None: search already forced, or not possible."""
        web_search = self._web_search
        if force_search or web_search is None or not web_search.configured:
            return None
        if not await self.supports_tools(model):
            return None
        return [WEB_SEARCH_TOOL]

    async def _fold(
        self,
        session_id: uuid.UUID,
        model: str,
        summary: str | None,
        turns: list[dict[str, Any]],
        covers_seq: int,
        summary_cap: int,
        window: int,
    ) -> tuple[str | None, int]:
        try:
            text = await fold(
                self._provider,
                model,
                summary,
                turns,
                max_summary_tokens=summary_cap,
                max_input_tokens=window - summary_cap,
            )
        except ParleyError as exc:
            log.warning("summarising failed, keeping the old summary: %s", exc.message)
            return summary, covers_seq - len(turns)
        async with self._db.transaction() as session:
            await messages_repo.store_summary(
                session, session_id, covers_seq, text, count_text(text)
            )
        retriever = self._retriever
        if retriever is not None:
            # What the summary compressed stays findable word for word.
            try:
                await retriever.index_history(session_id, covers_seq)
            except Exception:
                log.exception("indexing summarised history failed")
        return text, covers_seq

    async def _memory(self, user_id: uuid.UUID) -> list[str]:
        memory = self._memory_service
        if memory is None:
            return []
        try:
            return list(await memory.context_items(user_id))
        except ParleyError:
            return []

    async def _passages(
        self, session_id: uuid.UUID, question: str, covers_seq: int, status: Status
    ) -> str:
        retriever = self._retriever
        if retriever is None:
            return ""
        await status("retrieving", None)
        budget = PASSAGES_TOKENS
        try:
            passages = await retriever.retrieve(
                session_id, question, budget_tokens=budget, exclude_after_seq=covers_seq
            )
        except ParleyError as exc:
            log.warning("retrieval failed: %s", exc.message)
            return ""
        return format_passages(passages, budget) if passages else ""

    async def _search(
        self, question: str, wanted: bool, status: Status
    ) -> tuple[str, str | None, bool]:
        """Search before the model answers: results, or a note when there are none."""
        web_search = self._web_search
        if web_search is None or not wanted:
            return "", None, False
        await status("searching", None)
        outcome = await web_search.run(question)
        if not outcome.ok:
            await status("searching", unavailable_detail(outcome))
            return "", outcome.note(), True
        text = format_results(outcome.results, SEARCH_TOKENS)
        return text, None if text else outcome.note(), True


def _rule(current: dict[str, Any]) -> bool:
    return should_search(str(current["content"]))


def _turn_dict(message: dict[str, Any]) -> dict[str, Any]:
    return {"role": message["role"], "content": message["content"]}
