"""The assistant: one generation per answered message, independent of any connection.

A generation is a task on the node that stores the user message, started while that
message is being stored (``prepare``): the context is read and the upstream request
sent at once, and nothing is published until the store commits. It publishes to
the room through the hub (so every member on every node sees it), keeps running
when the asker disconnects, stops on ``cancel`` from any member on any node (a
control message reaches the node running it, which closes the upstream request),
and always ends by storing what was produced, partial text included, before its
``stream.end`` goes out.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from db.engine import Database
from db.repositories import usage as usage_repo
from errors import InternalError, NotFound, ParleyError, TooManyAnswers, Unavailable
from llm.metering import Payer, paid_by
from llm.provider import (
    ChatEvent,
    ChatRequest,
    NoFreeConnection,
    StreamFinished,
    TextDelta,
    Usage,
)
from llm.resilience import ResilientProvider
from llm.usage import estimate_usage, recover_usage
from realtime.control import ControlOp
from realtime.hub import Hub
from realtime.streams import StreamPublisher
from server.assistant.answer_slots import AnswerSlots, MemoryAnswerSlots
from server.assistant.answers import failure_of
from server.assistant.context import ContextAssembler, TurnContext
from server.assistant.late_answers import (
    STORED_LATER,
    LateAnswer,
    LateAnswers,
    Written,
    write_answer,
)
from server.assistant.turn_cache import turn_of
from server.config import Settings
from server.metrics import Metrics
from server.services.accounts import Principal
from server.services.memory import LearnedFrom, MemoryService

log = logging.getLogger("parley.assistant")

# The longest a question's store waits for its answer's request to leave (see
# ``PendingReply.request_on_its_way``); it leaves within a few milliseconds.
REQUEST_HEAD_START_S = 0.005


@dataclass(eq=False)
class Generation:
    stream_id: str
    session_id: str
    user_id: str
    reply_to: dict[str, Any]
    force_search: bool
    # The model the session asks for and its history revision, learnt when the
    # question is stored.
    model: str | None = None
    revision: int = 0
    task: asyncio.Task[None] | None = None
    # Resolved once the question is stored (``PendingReply.confirm``), cancelled if it
    # is not (``abandon``): nothing reaches the room before that.
    confirmed: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    # Resolved once the upstream request is on its way, or once it cannot be soon (the
    # context needs a database read or a slow stage, or the generation ended): the
    # question's store waits for it (``PendingReply.request_on_its_way``).
    request_out: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    # ``stream.start`` and the statuses, published while the context is read.
    announcements: _Announcements | None = None
    cancelled_by: str | None = None
    trace: dict[str, Any] = field(default_factory=dict)
    draining: bool = False
    # Another node took this one for dead and ended the stream (server.assistant.takeover).
    taken_over: bool = False
    # A regeneration, or the answer to an edited question: stored as a new version of
    # the question's answer (shown), or as the answer if it has none yet.
    versioned: bool = False
    # The version of the question this answers (``message_versions.reply_version``).
    reply_version: int | None = None
    # Cancelled by a regeneration or edit that replaces it: what it produced is dropped.
    superseded: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(eq=False)
class _Result:
    """What a generation produced, filled in as it runs and read when it is stored."""

    model_asked: str
    started: float
    first_token_at: float | None = None
    finish: StreamFinished | None = None
    error: ParleyError | None = None
    outcome: str = "stop"
    messages: list[dict[str, Any]] = field(default_factory=list)


def _end_frame(
    generation: Generation, result: _Result, answer: LateAnswer, stored: dict[str, Any] | None
) -> dict[str, Any]:
    end: dict[str, Any] = {
        "type": "stream.end",
        "session_id": generation.session_id,
        "stream_id": generation.stream_id,
        "finish_reason": result.outcome,
        "model": answer.model,
        "usage": {
            "prompt_tokens": answer.prompt_tokens,
            "completion_tokens": answer.completion_tokens,
        },
        "message": stored,
    }
    if result.error is not None:
        end["error"] = {"code": result.error.code, "message": result.error.message}
    return end


class Assistant:
    def __init__(
        self,
        *,
        database: Database,
        hub: Hub,
        provider: ResilientProvider,
        context: ContextAssembler,
        settings: Settings,
        metrics: Metrics,
        memory: MemoryService | None = None,
        slots: AnswerSlots | None = None,
        on_version: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None,
    ) -> None:
        self._db = database
        self._hub = hub
        self._provider = provider
        self._context = context
        self._settings = settings
        self._metrics = metrics
        self._memory = memory
        self._slots: AnswerSlots = slots or MemoryAnswerSlots()
        self.running: dict[str, Generation] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self.late_answers = LateAnswers(
            database, hub, context.turns, metrics, retry_max_s=settings.db_store_retry_max_s
        )
        hub.control_handlers[ControlOp.CANCEL_STREAM] = self._on_cancel_control
        hub.control_handlers[ControlOp.SUPERSEDE_ANSWERS] = self._on_supersede_control
        # Told of every version an answer's store shows (the hub publishes it to the room).
        self.on_version = on_version

    # AssistantTrigger ------------------------------------------------------------------

    def prepare(
        self,
        principal: Principal,
        session_id: uuid.UUID,
        question: dict[str, Any],
        *,
        force_search: bool,
        slot: str | None = None,
        versioned: bool = False,
        reply_version: int | None = None,
    ) -> PendingReply:
        """Start answering ``question`` while it is being stored.

        The context is read and the upstream request sent at once, so storing the
        question does not sit in front of the first token; the room hears nothing until
        the caller confirms the question was stored, and nothing at all if it abandons.
        """
        generation = Generation(
            stream_id=uuid.uuid4().hex,
            session_id=str(session_id),
            user_id=str(principal.user_id),
            reply_to=question,
            force_search=force_search,
            versioned=versioned,
            reply_version=reply_version,
        )
        self.running[generation.stream_id] = generation
        # Every model request of this answer, and what it starts (memory extraction),
        # is paid by the asker (llm.metering): the task copies this context.
        with paid_by(Payer(principal.user_id, session_id)):
            generation.task = asyncio.create_task(
                self._run(generation), name=f"generation-{generation.stream_id}"
            )
        if slot is not None:
            # A done callback: a task cancelled before it ever ran skips its finally.
            user_id = generation.user_id
            generation.task.add_done_callback(
                lambda _: self._in_background(self._slots.give_back(user_id, slot))
            )
        return PendingReply(generation)

    async def reserve(self, principal: Principal) -> str | None:
        """One of the user's ``MAX_CONCURRENT_ANSWERS`` slots, over every node, for an
        answer about to be prepared (``prepare(slot=...)`` gives it back when that answer
        ends); ``too_many_answers`` when all are taken, None when there is no cap."""
        cap = self._settings.max_concurrent_answers
        if not cap:
            return None
        slot = uuid.uuid4().hex
        if not await self._slots.take(str(principal.user_id), slot, cap):
            self._metrics.budget_refusals.labels("concurrency").inc()
            raise TooManyAnswers(f"you have {cap} answers running already; wait for one to end")
        return slot

    def release(self, principal: Principal, slot: str | None) -> None:
        """Give back a slot whose answer was never prepared."""
        if slot is not None:
            self._in_background(self._slots.give_back(str(principal.user_id), slot))

    def warm(self, session_id: uuid.UUID, member_id: uuid.UUID) -> None:
        """A member joined the session on this node: read its history for the copy
        in the background, off the path of their first question."""
        if self._context.needs_warming(session_id, member_id):
            self._in_background(self._context.warm(session_id, member_id))

    async def cancel(self, session_id: str, stream_id: str, by_user: str) -> None:
        """Stop a generation wherever it runs; ``not_found`` if none is running."""
        # The stream must belong to the session the caller is a member of: a stream id
        # from another room is not found (one running here is checked by its session,
        # since the stream log may not list it yet).
        local = self.running.get(stream_id)
        if local is None or local.session_id != session_id:
            running = await self._hub.stream_log.running(session_id)
            if stream_id not in {sid for sid, _ in running}:
                raise NotFound("no such running stream in this session")
        await self._hub.send_control(
            {
                "op": ControlOp.CANCEL_STREAM,
                "stream_id": stream_id,
                "session_id": session_id,
                "by": by_user,
            }
        )

    def _on_cancel_control(self, action: dict[str, Any]) -> None:
        generation = self.running.get(str(action.get("stream_id")))
        # Checked again where the generation runs: a control from another node must
        # name the session the stream belongs to.
        if (
            generation is not None
            and generation.task is not None
            and generation.session_id == str(action.get("session_id"))
        ):
            generation.cancelled_by = str(action.get("by"))
            generation.task.cancel()

    async def supersede(self, session_id: str, question_id: str, keep_stream: str) -> None:
        """Stop every answer to ``question_id`` running on any node but ``keep_stream``
        (the regeneration or edit that replaces them)."""
        await self._hub.send_control(
            {
                "op": ControlOp.SUPERSEDE_ANSWERS,
                "session_id": session_id,
                "question_id": question_id,
                "keep": keep_stream,
            }
        )

    def _on_supersede_control(self, action: dict[str, Any]) -> None:
        for generation in list(self.running.values()):
            if (
                generation.task is not None
                and generation.stream_id != action.get("keep")
                and generation.session_id == str(action.get("session_id"))
                and generation.reply_to.get("id") == action.get("question_id")
            ):
                generation.superseded = True
                generation.task.cancel()

    async def drain(self, timeout_s: float) -> None:
        """On shutdown: let running generations finish, then stop and store the rest."""
        tasks = {g.task: g for g in self.running.values() if g.task is not None}
        if tasks:
            log.info("draining %d generations", len(tasks))
            _, late = await asyncio.wait(tasks, timeout=timeout_s)
            for task in late:
                tasks[task].draining = True
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self.late_answers.close()

    # The generation --------------------------------------------------------------------

    async def _run(self, generation: Generation) -> None:
        publisher = StreamPublisher(
            self._hub,
            self._hub.stream_log,
            generation.session_id,
            generation.stream_id,
            on_taken_over=partial(self._taken_over, generation),
        )
        result = _Result(model_asked=self._settings.model_for(None), started=time.perf_counter())
        try:
            try:
                await self._generate(generation, publisher, result)
            except asyncio.CancelledError:
                if generation.confirmed.cancelled():
                    return  # abandoned: the question was never stored
                stopped = generation.draining or generation.taken_over
                result.outcome = "error" if stopped else "cancelled"
                if generation.draining:
                    result.error = Unavailable("the server restarted before the answer finished")
            except ParleyError as exc:
                result.outcome, result.error = "error", exc
            except Exception:
                log.exception("generation %s failed", generation.stream_id)
                result.outcome, result.error = "error", ParleyError("the assistant failed")
            finally:
                # However it ended, the question's store waits for it no longer.
                _resolve(generation.request_out)
            if not await _was_confirmed(generation):
                return  # the question was never stored: there is nothing to answer
            # Shielded: a second cancel (shutdown) must not lose the stored answer.
            await asyncio.shield(self._store_and_end(generation, publisher, result))
        finally:
            self.running.pop(generation.stream_id, None)
            generation.done.set()

    async def _announce(
        self, generation: Generation, publisher: StreamPublisher, result: _Result
    ) -> None:
        """``stream.start``, once the question is stored and its frame is out."""
        await asyncio.shield(generation.confirmed)
        result.model_asked = generation.model or self._settings.model_for(None)
        await publisher.start(result.model_asked, generation.reply_to["id"])

    async def _generate(
        self, generation: Generation, publisher: StreamPublisher, result: _Result
    ) -> None:
        announcements = _Announcements(
            asyncio.ensure_future(self._announce(generation, publisher, result)), publisher
        )
        generation.announcements = announcements
        # The request leaves now; what it answers waits for stream.start and the statuses.
        asked = await self._ask(generation, announcements, result)
        try:
            await announcements.status("generating")
            await announcements.settled()
            announcements.started()  # raises what kept stream.start from going out
            question = turn_of(generation.reply_to)
            if asked.context.fits(question.seq, generation.revision):
                # The copy may have been filled after the question's own store told it.
                self._context.turns.appended(
                    uuid.UUID(generation.session_id),
                    question,
                    generation.revision,
                    uuid.UUID(generation.user_id),
                )
            else:
                # The history was read (or copied) before the question had its seq, and
                # something else came in between: ask again on the history as stored.
                # The room has seen this answer's statuses up to "generating" already.
                self._metrics.context_rereads.inc()
                await asked.close()
                asked = await self._ask(generation, announcements, result, again=True)
            try:
                _take(await asked.first, publisher, result)
            except StopAsyncIteration:
                return
            await publisher.flush_now()
            async for event in asked.stream:
                _take(event, publisher, result)
        finally:
            await asked.close()

    async def _ask(
        self,
        generation: Generation,
        announcements: _Announcements,
        result: _Result,
        *,
        again: bool = False,
    ) -> _Asked:
        """Build the context for the question and send the upstream request; ``again``
        builds it without announcing its stages a second time."""
        out = generation.request_out

        async def status(stage: str, detail: str | None) -> None:
            _resolve(out)  # a slow stage: the question's store waits no longer
            await (_unannounced if again else announcements.status)(stage, detail)

        context = await self._context.assemble(
            uuid.UUID(generation.session_id),
            uuid.UUID(generation.user_id),
            generation.reply_to,
            force_search=generation.force_search,
            status=status,
            reading=lambda: _resolve(out),
        )
        result.messages = context.messages
        request = ChatRequest(
            model=context.model,
            messages=context.messages,
            max_tokens=self._settings.llm_reply_reserve_tokens,
            user=generation.user_id,
            purpose="reask" if again else None,
            trace=generation.trace,
            on_sent=lambda: _resolve(out),
        )
        return _Asked(context, self._context.stream(request, context, announcements.status))

    async def _store_and_end(
        self, generation: Generation, publisher: StreamPublisher, result: _Result
    ) -> None:
        """Store the answer and its usage event, then tell the room the stream ended.

        Both writes come before ``stream.end``, so a client that saw the end finds the
        message in history and the generation in the usage record.
        """
        finish = result.finish
        answered_by = finish.model if finish is not None else result.model_asked
        text = publisher.text
        usage = (finish.usage if finish else None) or estimate_usage(result.messages, text)
        ended_elsewhere = not await self._settle_stream(generation, publisher, result)
        if ended_elsewhere:
            text = ""  # the node that ended it stored its text
        duration = time.perf_counter() - result.started
        ttft = result.first_token_at - result.started if result.first_token_at is not None else None
        status = {"stop": "complete", "length": "complete"}.get(result.outcome, result.outcome)
        # A failure is stored even without text, so that it shows in place (with a
        # retry); a stream another node ended was stored there. An answer replaced by a
        # regeneration or an edit is not: the replacement is the answer (storing both
        # would race, on two nodes, over which becomes the answer and which a version).
        keep = not generation.superseded and (
            bool(text) or (status == "error" and not ended_elsewhere)
        )
        answer = LateAnswer(
            session_id=uuid.UUID(generation.session_id),
            user_id=uuid.UUID(generation.user_id),
            reply_to=uuid.UUID(generation.reply_to["id"]),
            text=text if keep else "",
            status=status,
            model=answered_by,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            ttft_ms=round(ttft * 1000) if ttft is not None else None,
            duration_ms=round(duration * 1000),
            outcome=result.outcome,
            error=failure_of(result.error) if keep and status == "error" else None,
            versioned=generation.versioned,
            reply_version=generation.reply_version,
        )
        written = await self._write(generation, answer, result)
        stored = written.message if written is not None else None
        if written is not None and stored is not None:
            await self._remember(generation, answer, written)
        if not ended_elsewhere:
            end = _end_frame(generation, result, answer, stored)
            await publisher.end(end, written.seq if written is not None else None)
        self._record_metrics(answered_by, result.outcome, usage, ttft, duration, result.error)
        reported = finish is not None and finish.usage is not None
        generation_id = generation.trace.get("generation_id")
        if not reported and written is not None and generation_id:
            self._recover_usage_later(written.usage_event_id, str(generation_id))
        if stored is not None and result.outcome in ("stop", "length"):
            self._learn_later(generation, stored)

    async def _remember(self, generation: Generation, answer: LateAnswer, written: Written) -> None:
        """Committed: only now may this node's copy of the history hold the answer."""
        assert written.message is not None
        self._metrics.messages_stored.labels("assistant").inc()
        if written.seq is not None:
            self._context.turns.appended(
                answer.session_id, turn_of(written.message), written.history_revision, None
            )
            return
        # A new version of a stored answer: the history changed under the copy, and
        # what was learned from the answer it replaced is gone (learned again next).
        self._context.turns.drop(answer.session_id)
        if written.new_version and self._memory is not None:
            author = generation.reply_to.get("user_id") or generation.user_id
            await self._memory.forgotten(uuid.UUID(author))
        if written.new_version and self.on_version is not None:
            try:
                await self.on_version(generation.session_id, written.message)
            except ParleyError as exc:
                log.warning("message.version not published: %s", exc.message)

    async def _settle_stream(
        self, generation: Generation, publisher: StreamPublisher, result: _Result
    ) -> bool:
        """Get every delta out and settle the stream in its log; False when another node
        ended it (and then this one stores nothing and sends no ``stream.end``)."""
        if generation.announcements is not None:
            await generation.announcements.settled()
        if not publisher.started:
            await publisher.start(result.model_asked, generation.reply_to["id"])
        # Every delta goes to the log and the room before the stream is settled: the
        # writer publishes nothing after its own settle, and the log holds the text
        # that is stored (what a node taking the stream over would store).
        await publisher.drain()
        # After the start: opening a stream's log starts it afresh. Only losing the
        # settle means another node ended the stream: then, and only then, this node
        # sends no stream.end (it must not send two, and must never send none).
        if await self._settle(generation.stream_id):
            return True
        # This node was taken for dead (a pause longer than the node TTL) and another
        # one ended the stream and stored its text: storing it again would answer the
        # question twice. What the upstream was paid for is recorded.
        log.warning("stream %s was ended by another node", generation.stream_id)
        generation.taken_over, result.outcome = True, "error"
        await publisher.stop()
        return False

    async def _write(
        self, generation: Generation, answer: LateAnswer, result: _Result
    ) -> Written | None:
        """Store the answer and its usage event; None when that failed, the failure
        then in ``result`` (and the answer kept to be stored later, if the database was
        out of reach)."""
        try:
            return await write_answer(self._db, answer)
        except Unavailable as exc:
            # The room must not wait on the database: the stream ends now, with the
            # error, and the answer is stored (and sent as a message) once it is back.
            self.late_answers.keep(answer)
            if answer.text:
                result.error = Unavailable(STORED_LATER, retry_after=exc.retry_after)
            elif result.error is None:
                result.error = exc  # only the usage event waits: nothing will follow
        except Exception:
            # Not an outage: storing it again would fail again. The stream still ends.
            log.exception("storing the answer of stream %s failed", generation.stream_id)
            result.error = InternalError("the answer could not be stored")
        result.outcome = "error"
        return None

    def _taken_over(self, generation: Generation) -> None:
        """The stream log says another node ended this stream: stop asking the model."""
        generation.taken_over = True
        if generation.task is not None:
            generation.task.cancel()

    async def _settle(self, stream_id: str) -> bool:
        try:
            return await self._hub.stream_log.settle(stream_id)
        except ParleyError as exc:
            # Unknown is not "taken": a duplicate answer is better than a lost one.
            log.warning("stream log settle failed: %s", exc.message)
            return True

    def _recover_usage_later(self, event_id: uuid.UUID, generation_id: str) -> None:
        """A cancelled stream gets no usage chunk: ask the upstream for its count."""
        lookup = getattr(self._provider.provider(), "generation_usage", None)
        if lookup is None:
            return

        async def recover() -> None:
            usage = await recover_usage(lookup, generation_id)
            if usage is not None:
                async with self._db.transaction() as session:
                    await usage_repo.update_usage_tokens(
                        session, event_id, usage.prompt_tokens, usage.completion_tokens
                    )

        self._in_background(recover())

    def _in_background(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _record_metrics(
        self,
        model: str,
        outcome: str,
        usage: Usage,
        ttft: float | None,
        duration: float,
        error: ParleyError | None,
    ) -> None:
        self._metrics.generations.labels(outcome).inc()
        if ttft is not None:
            self._metrics.ttft.labels(model).observe(ttft)
            if duration > ttft and usage.completion_tokens:
                self._metrics.tokens_per_second.labels(model).observe(
                    usage.completion_tokens / (duration - ttft)
                )
        if isinstance(error, NoFreeConnection):
            self._metrics.answers_without_connection.inc()
        elif error is not None:
            self._metrics.upstream_errors.labels("llm", error.code).inc()
        for name, state in self._provider.breaker_states().items():
            self._metrics.breaker_state.labels(name).set(1 if state == "open" else 0)

    def _learn_later(self, generation: Generation, stored: dict[str, Any]) -> None:
        """Memory extraction runs off the hot path, after the answer is out."""
        self._learn(generation.reply_to, stored, fallback_user=generation.user_id)

    def relearn(
        self,
        principal: Principal,
        session_id: uuid.UUID,
        question: dict[str, Any],
        answer: dict[str, Any],
    ) -> None:
        """Another version of an exchange is shown (``VersionService.select``): what was
        learned from the version it replaces went with the change; learn from this one.
        Paid by the member who switched, like an answer they asked for."""
        if answer.get("status") != "complete" or not answer.get("content"):
            return
        with paid_by(Payer(principal.user_id, session_id)):
            self._learn(question, answer, fallback_user=str(principal.user_id))

    def _learn(
        self, question: dict[str, Any], answer: dict[str, Any], *, fallback_user: str
    ) -> None:
        """Learn about the question's author from the exchange as shown, in the
        background; stored only while those versions are still shown (``LearnedFrom``).

        Not with the offline model: its rule-based "extraction" would be stored as if a
        model had learned it ("Name: Ada and I prefer short answers" as one fact).
        """
        memory = self._memory
        if memory is None or self._settings.offline_model:
            return
        question_id = uuid.UUID(question["id"])
        source = LearnedFrom(
            question_id,
            (
                (question_id, int(question.get("version") or 1)),
                (uuid.UUID(answer["id"]), int(answer.get("version") or 1)),
            ),
        )
        # The author: a member who regenerates another's answer learns nothing about
        # themselves from someone else's question.
        author = question.get("user_id") or fallback_user
        self._in_background(
            memory.learn_from_turn(
                uuid.UUID(author),
                question["content"],
                answer["content"],
                model=answer.get("model") or self._settings.model_for(None),
                complete=self._provider.complete,
                source=source,
            )
        )


class _Asked:
    """An upstream request in flight: its context, its events, and the first one."""

    def __init__(self, context: TurnContext, stream: AsyncGenerator[ChatEvent, None]) -> None:
        self.context = context
        self.stream = stream

        async def first_event() -> ChatEvent:
            return await anext(stream)

        self.first: asyncio.Future[ChatEvent] = asyncio.ensure_future(first_event())

    async def close(self) -> None:
        self.first.cancel()
        await asyncio.gather(self.first, return_exceptions=True)
        # Closing the generator closes the upstream HTTP response.
        await self.stream.aclose()


class _Announcements:
    """``stream.start``, then each ``stream.status``, published in order in the background,
    so that reading the context never waits on the room (or on the question's store)."""

    def __init__(self, start: asyncio.Future[None], publisher: StreamPublisher) -> None:
        self._start = self._last = start
        self._publisher = publisher
        start.add_done_callback(_consume)

    def started(self) -> None:
        """After ``settled``: re-raise why ``stream.start`` did not go out (cancelled
        when the question was abandoned, or the publish's own error), if it did not."""
        self._start.result()

    async def status(self, stage: str, detail: str | None = None) -> None:
        previous = self._last

        async def publish() -> None:
            await asyncio.wait([previous])
            if self._publisher.started:
                await self._publisher.status(stage, detail)

        self._last = asyncio.ensure_future(publish())
        self._last.add_done_callback(_consume)

    async def settled(self) -> None:
        """Wait until everything announced so far is out (or failed)."""
        await asyncio.wait([self._last])


async def _unannounced(stage: str, detail: str | None) -> None:
    """The stages of a context built again: the room heard them the first time."""


def _consume(future: asyncio.Future[None]) -> None:
    # A failed announcement is logged by the hub; never "exception was never retrieved".
    if not future.cancelled():
        future.exception()


class PendingReply:
    """A generation started before its question was stored (``Assistant.prepare``)."""

    def __init__(self, generation: Generation) -> None:
        self._generation = generation

    async def request_on_its_way(self) -> None:
        """Wait until the answer's upstream request is written, so that storing the
        question does not take the event loop first. httpx yields to the loop several
        times before it writes; each time, the store's own work would have run ahead.
        Not long: an answer that cannot send soon resolves this at once, and
        ``REQUEST_HEAD_START_S`` bounds the rest."""
        await asyncio.wait([self._generation.request_out], timeout=REQUEST_HEAD_START_S)

    def confirm(self, stored: dict[str, Any], model: str | None, revision: int) -> str:
        """The question is stored and its frame sent: let the answer reach the room."""
        generation = self._generation
        generation.reply_to = stored
        generation.model = model
        generation.revision = revision
        if not generation.confirmed.done():
            generation.confirmed.set_result(None)
        return generation.stream_id

    def abandon(self) -> None:
        """The question was not stored (refused, or a retry of one already answered)."""
        generation = self._generation
        if not generation.confirmed.done():
            generation.confirmed.cancel()
            if generation.task is not None:
                generation.task.cancel()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _was_confirmed(generation: Generation) -> bool:
    try:
        await asyncio.shield(generation.confirmed)
    except asyncio.CancelledError:
        if generation.confirmed.cancelled():
            return False
        raise
    return True


def _take(event: ChatEvent, publisher: StreamPublisher, result: _Result) -> None:
    if isinstance(event, TextDelta):
        if result.first_token_at is None:
            result.first_token_at = time.perf_counter()
        publisher.add(event.text)
    elif isinstance(event, StreamFinished):
        result.finish = event
        result.outcome = event.finish_reason
        result.error = event.error
