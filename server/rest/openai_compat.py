"""The OpenAI-compatible front door: ``POST /v1/chat/completions`` and ``GET /v1/models``.

A request is a turn in a room (``server/services/frontdoor.py`` says which): the
question is posted like any member's message and the answer followed through the
room (``RoomTurn``), so every member sees both live and the room's memory, search,
documents, summary and history shape the answer. Errors are OpenAI's shape.

Authenticated by Bearer: a ``parley token`` access token or a per-user API key
(``pk_…``, ``/v1/me/api-keys``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from errors import BadRequest, Conflict, NotFound, ParleyError, Unavailable
from server.container import Container, container_of
from server.rest import openai_format as fmt
from server.rest.http import JSONResponse, bearer_or_cookie, validate
from server.rest.schemas import ChatCompletionBody
from server.rest.sse import RoomTurn
from server.services.accounts import Principal
from server.services.api_keys import looks_like_key
from server.services.frontdoor import SESSION_HEADER, FrontDoor, FrontDoorTurn

log = logging.getLogger("parley.frontdoor")
# Clean-ups of answers whose callers left: they outlive the request's own task, which
# the server cancels on a disconnect.
_leaving: set[asyncio.Task[None]] = set()


async def _caller(container: Container, request: Request) -> Principal:
    token, source = bearer_or_cookie(request)
    if source == "bearer" and token is not None and looks_like_key(token):
        return await container.api_keys.authenticate(token)
    return await container.authenticate(request)


async def list_models(request: Request) -> Response:
    container = container_of(request)
    try:
        await _caller(container, request)
    except ParleyError as exc:
        return fmt.error_response(exc)
    models = FrontDoor(container.sessions, container.settings).models()
    data = [{"id": m, "object": "model", "created": 0, "owned_by": "parley"} for m in models]
    return JSONResponse({"object": "list", "data": data})


async def chat_completions(request: Request) -> Response:
    container = container_of(request)
    try:
        principal = await _caller(container, request)
        body = await _body(request)
        turn = await FrontDoor(container.sessions, container.settings).turn(
            principal,
            body,
            session_header=request.headers.get(SESSION_HEADER),
            idempotency_key=request.headers.get("idempotency-key"),
        )
        room = await container.sse.open_turn(
            principal, turn.session_id, content=turn.content, client_msg_id=turn.client_msg_id
        )
    except ParleyError as exc:
        return fmt.error_response(exc)
    headers = {"X-Parley-Session": str(turn.session_id), "X-Parley-Message": room.message["id"]}
    return _Reply(_Answer(container, principal, room, turn), headers)


class _Reply(Response):
    """The answer as the HTTP response, sent from the request's own task.

    Held until the first text or the end: an answer that fails before any text gets an
    error status, as OpenAI's clients expect (they retry a 503 or a 429), not a 200
    and an error event. Once the text is there, the status, the role chunk and the text
    go out with no task or loop turn between them: a ``StreamingResponse`` returned
    after the hold (ASGI 2.3: a task group, its tasks started on later loop turns,
    behind the answer's relay to every other member) cost 0.5-1 ms of the first token.
    A disconnect at any point cancels this task: the room's policy then says what the
    answer does (``_Answer.abandon``).
    """

    def __init__(self, answer: _Answer, headers: dict[str, str]) -> None:
        self._answer = answer
        self._extra = headers
        # Set once the answer is let go of otherwise (its events, its end, its error):
        # from then on a disconnect has nothing to abandon.
        self._streaming = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        me = asyncio.current_task()
        assert me is not None
        gone = finished = False

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            if not finished:  # a cancel after the last send would hit uvicorn's code
                gone = True
                me.cancel()

        watcher = asyncio.create_task(watch())
        try:
            await self._respond(scope, receive, send)
            finished = True  # no await since the last send: the watcher cancels no more
        except asyncio.CancelledError:
            if not gone:
                if not self._streaming:
                    self._answer.abandon()  # a shutdown: leave the room all the same
                raise
            me.uncancel()
            if not self._streaming:
                self._answer.abandon()  # once streaming, ``events`` let go of the answer
                await Response(status_code=499)(scope, receive, send)  # nobody reads it
        except BaseException:
            if not self._streaming:
                self._answer.abandon()  # a bug: the listener must not stay in the room
            raise
        finally:
            watcher.cancel()

    async def _respond(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer = self._answer
        try:
            await answer.begin()
            whole = None if answer.streamed else await answer.whole()
        except ParleyError as exc:
            await answer.close()
            self._streaming = True  # nothing left to abandon
            response: Response = fmt.error_response(exc)
            response.headers.update(self._extra)
            await response(scope, receive, send)
            return
        self._streaming = True
        if whole is not None:
            await answer.close()  # a stored answer's retry had not left the room yet
            await JSONResponse(whole, headers=self._extra)(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200, "headers": self._head()})
        async with aclosing(answer.events()) as chunks:
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _head(self) -> list[tuple[bytes, bytes]]:
        fields = {
            **self._extra,
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
        return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in fields.items()]


class _Answer:
    """The room's answer to one front-door turn, relayed in OpenAI's shapes."""

    def __init__(
        self, container: Container, principal: Principal, room: RoomTurn, turn: FrontDoorTurn
    ) -> None:
        self._container = container
        self._principal = principal
        self._room = room
        self._turn = turn
        self._frames = room.frames()
        self._held: list[dict[str, Any]] = []
        self.end: dict[str, Any] | None = None
        self.completion = fmt.Completion(
            room.stream_id or room.message["id"],
            container.settings.model_for(None),
            include_usage=turn.include_usage,
        )
        self._stored: dict[str, Any] | None = None
        self.streamed = turn.stream

    async def close(self) -> None:
        await self._room.close()

    async def begin(self) -> bool:
        """Read up to the first text or the end. Raises the answer's error if it
        failed before any text; returns True (``_until_disconnected`` tells a
        disconnect by None)."""
        room = self._room
        if room.stream_id is None:
            if room.created:
                raise Unavailable("the assistant is not running on this server")
            # A retry of a turn whose answer finished: the stored answer is the reply.
            self._stored = await self._container.messages.answer_to(
                uuid.UUID(room.session_id), uuid.UUID(room.message["id"])
            )
            if self._stored is None:
                raise Conflict("this turn is stored but has no answer; ask it again in other words")
            self.completion.model = self._stored.get("model") or self.completion.model
            return True
        async for frames in self._frames:
            for frame, _ in frames:
                self._held.append(frame)
                if frame["type"] == "stream.start":
                    self.completion.model = frame.get("model") or self.completion.model
                elif frame["type"] == "stream.end":
                    self.end = frame
            if self.end is not None or any(f["type"] == "stream.delta" for f in self._held):
                break
        if self.end is not None and not _text(self._held):
            error = fmt.error_of_end(self.end)
            if error is not None:
                raise error
        return True

    async def whole(self) -> dict[str, Any]:
        if self._stored is not None:
            return self.completion.whole(self._stored["content"], "stop", fmt.usage_of(None))
        frames = list(self._held)
        if self.end is None:
            async for batch in self._frames:
                frames.extend(frame for frame, _ in batch)
                if batch[-1][0]["type"] == "stream.end":
                    self.end = batch[-1][0]
        await self._room.close()
        error = fmt.error_of_end(self.end or {})
        if error is not None:
            raise error  # failed part-way: the part is in the room, not a whole answer
        stored = (self.end or {}).get("message") or {}
        text = stored.get("content") if stored else _text(frames)
        return self.completion.whole(
            text or "", fmt.finish_reason_of(self.end), fmt.usage_of(self.end)
        )

    async def events(self) -> AsyncGenerator[bytes, None]:
        completion = self.completion
        ended = False
        try:
            # The role chunk goes out in one write with the text held so far: the
            # first token is not a write (and a read) behind it.
            role = completion.chunk({"role": "assistant", "content": ""})
            if self._stored is not None:
                yield role + completion.chunk({"content": self._stored["content"]})
                ended, self.end = True, {}
            else:
                pending: list[dict[str, Any]] = list(self._held)
                while True:
                    out = [role, *(self._event(frame) for frame in pending)]
                    role = b""
                    if any(out):
                        yield b"".join(out)
                    if self.end is not None:
                        ended = True
                        break
                    batch = await anext(self._frames, None)
                    if batch is None:
                        break
                    pending = [frame for frame, _ in batch]
                    for frame in pending:
                        if frame["type"] == "stream.end":
                            self.end = frame
            if not ended:
                return  # the room let go of the listener (the server is closing)
            error = fmt.error_of_end(self.end or {})
            if error is not None:
                yield fmt.error_event(error)  # OpenAI's clients raise on it
                return
            yield completion.chunk({}, fmt.finish_reason_of(self.end))
            if self._turn.include_usage:
                yield completion.usage_chunk(fmt.usage_of(self.end))
            yield fmt.DONE
        finally:
            if ended:
                await self._room.close()
            else:
                self.abandon()

    def _event(self, frame: dict[str, Any]) -> bytes:
        if frame["type"] == "stream.delta":
            return self.completion.chunk({"content": frame["text"]})
        return b""  # start, statuses and the end are said otherwise, or not at all

    def abandon(self) -> None:
        """The caller left before the end: the room's policy says what the answer does."""
        task = asyncio.create_task(self._abandon())
        _leaving.add(task)
        task.add_done_callback(_leaving.discard)

    async def _abandon(self) -> None:
        room, container = self._room, self._container
        policy = container.settings.frontdoor_on_disconnect
        try:
            if room.stream_id is not None and self.end is None and policy != "keep":
                if policy == "cancel_if_alone":
                    present = await container.presence.occupied([room.session_id])
                    if room.session_id in present:
                        return  # members are watching: it finishes for the room
                await container.assistant.cancel(
                    room.session_id, room.stream_id, str(self._principal.user_id)
                )
        except NotFound:
            pass  # it ended meanwhile
        except ParleyError as exc:
            log.warning(
                "answer %s not stopped after its caller left: %s", room.stream_id, exc.message
            )
        finally:
            await room.close()


def _text(frames: list[dict[str, Any]]) -> str:
    deltas = sorted((f for f in frames if f["type"] == "stream.delta"), key=lambda f: f["index"])
    return "".join(f["text"] for f in deltas)


async def _body(request: Request) -> ChatCompletionBody:
    raw = await request.body()
    try:
        data = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc.msg}") from None
    if data is None:
        raise BadRequest("a JSON body is required")
    return validate(ChatCompletionBody, data)


routes = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
]
