"""``POST /v1/sessions/{id}/messages`` with ``Accept: text/event-stream``.

The request becomes a listener on the room, like a WebSocket member that is not
shown in presence, so it receives the same frames through the same delivery rules
(order, stream cursors). It streams the stored user message and the answer to it as
server-sent events whose ``event:`` is the frame type, and ends after ``stream.end``.

A client whose response broke off sends the same POST again (the same
``client_msg_id``, so nothing is stored twice) and gets the rest of the answer. The
``id:`` of ``stream.start`` and of each delta is ``{stream_id}:{next index}``; with
the last one as ``Last-Event-ID`` the retry replays the answer from there, out of the
stream log, then goes on live. Without it (or with another answer's), a retry while
the answer runs gets it from its start.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson
from starlette.responses import StreamingResponse

from realtime.connection import Connection
from realtime.frames import encode
from realtime.hub import Hub
from server.config import Settings
from server.rest.schemas import MessagePostBody
from server.services.accounts import Principal
from server.services.messages import MessageService

SSE_FRAMES = frozenset({"message", "stream.start", "stream.status", "stream.delta", "stream.end"})
SSE_KEEPALIVE_S = 15.0
NO_TEXT = 1 << 31  # an offset past any stream's end: reading there gives its frames only


@dataclass
class RoomTurn:
    """A message posted to a room, with a listener on the room that receives its
    answer through the same delivery rules as any member (order, stream cursors).

    ``stream_id`` is the answer's, or None when there is none to follow (``reply``
    was ``"none"``, or a retry whose answer is no longer running). ``close`` must be
    called once the turn is done with: it takes the listener off the room.
    """

    hub: Hub
    listener: Connection
    session_id: str
    message: dict[str, Any]
    stream_id: str | None
    created: bool
    closed: bool = False

    async def frames(self) -> AsyncIterator[list[tuple[dict[str, Any], str]]]:
        """The answer's frames (decoded and as sent), in the batches they were queued
        in, through its ``stream.end``."""
        if self.stream_id is None:
            return
        while True:
            batch, closing = await self.listener.next_batch()
            frames: list[tuple[dict[str, Any], str]] = []
            ended = False
            for text in batch:
                frame = orjson.loads(text)
                if frame.get("type") not in SSE_FRAMES or frame.get("stream_id") != self.stream_id:
                    continue
                frames.append((frame, text))
                if frame["type"] == "stream.end":
                    ended = True
                    break
            if frames:
                yield frames
            if ended or closing is not None:
                return

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            await self.hub.leave(self.listener, self.session_id, presence=False)


class SSEStreamer:
    def __init__(self, messages: MessageService, hub: Hub, settings: Settings) -> None:
        self._messages = messages
        self._hub = hub
        self._settings = settings

    async def post_and_stream(
        self,
        principal: Principal,
        session_id: uuid.UUID,
        body: MessagePostBody,
        last_event_id: str | None = None,
    ) -> StreamingResponse:
        turn = await self.open_turn(
            principal,
            session_id,
            content=body.content,
            client_msg_id=body.client_msg_id,
            reply=body.reply,
            search=body.search,
            last_event_id=last_event_id,
        )
        return StreamingResponse(
            self._events(turn),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            status_code=201 if turn.created else 200,
        )

    async def open_turn(
        self,
        principal: Principal,
        session_id: uuid.UUID,
        *,
        content: str,
        client_msg_id: str | None,
        reply: str = "auto",
        search: bool = False,
        last_event_id: str | None = None,
    ) -> RoomTurn:
        """Post ``content`` to the room as ``principal`` and follow its answer: the one
        way in for every caller that streams a turn over HTTP (SSE, the front door)."""
        sid = str(session_id)
        # No membership read first: ``post`` refuses a non-member before anything is
        # sent, and until it succeeds the listener sends nothing.
        listener = Connection(
            conn_id="sse-" + uuid.uuid4().hex,
            user_id=str(principal.user_id),
            name=principal.name,
            role=principal.role,
            expires_at=None,
            max_outbox=self._settings.send_queue_frames,
            max_outbox_bytes=self._settings.send_queue_bytes,
            on_overflow=lambda _: None,
        )
        await self._hub.begin_join(listener, sid, presence=False)
        try:
            posted = await self._messages.post(
                principal,
                session_id,
                content=content,
                client_msg_id=client_msg_id,
                reply=reply,
                search=search,
            )
        except BaseException:
            await self._hub.leave(listener, sid, presence=False)
            raise
        message = posted.message
        stream_id = posted.stream_id
        if not posted.created and reply != "none":
            # A retry: the answer may still be in the stream log, or running. The replay
            # sets the listener's cursor before the frames held since begin_join are let
            # through, so that each index goes out once, in order.
            try:
                stream_id = await self._resume(listener, sid, message["id"], last_event_id)
            except BaseException:
                await self._hub.leave(listener, sid, presence=False)
                raise
        # Everything after the message before ours is released to the listener.
        self._hub.finish_join(listener, sid, message["seq"] - 1)
        return RoomTurn(self._hub, listener, sid, message, stream_id, posted.created)

    async def _resume(
        self, listener: Connection, sid: str, message_id: str, last_event_id: str | None
    ) -> str | None:
        """The answer to ``message_id`` replayed to ``listener``: from where the client's
        ``Last-Event-ID`` says it was, or else the running one from its start."""
        wanted, offset = _parse_event_id(last_event_id)
        if wanted is not None and await self._answering(wanted, message_id) is not None:
            return await self._replay(listener, sid, wanted, offset)
        for stream_id, _ in await self._hub.stream_log.running(sid):
            start = await self._answering(stream_id, message_id)
            if start is not None:
                return await self._replay(listener, sid, stream_id, 0, start)
        return None

    async def _answering(self, stream_id: str, message_id: str) -> dict[str, Any] | None:
        """The stream's ``stream.start`` if it answers ``message_id``."""
        snapshot = await self._hub.stream_log.read(stream_id, NO_TEXT)
        start = snapshot.start if snapshot is not None else None
        return start if start is not None and start.get("reply_to") == message_id else None

    async def _replay(
        self,
        listener: Connection,
        sid: str,
        stream_id: str,
        offset: int,
        start: dict[str, Any] | None = None,
    ) -> str | None:
        found = await self._hub.replay_stream(
            listener,
            sid,
            stream_id,
            offset,
            before_replay=partial(listener.send, encode(start)) if start else None,
        )
        return stream_id if found else None

    async def _events(self, turn: RoomTurn) -> AsyncIterator[bytes]:
        try:
            message = turn.message
            yield _event(
                "message", {"type": "message", "session_id": turn.session_id, "message": message}
            )
            async for frames in turn.frames():
                # What was queued together goes out in one write.
                yield b"".join(
                    _event(frame["type"], frame, raw=text, event_id=_event_id(frame))
                    for frame, text in frames
                )
        finally:
            await turn.close()


def _event(
    name: str, frame: dict[str, Any], raw: str | None = None, event_id: str | None = None
) -> bytes:
    data = raw if raw is not None else orjson.dumps(frame).decode()
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {name}\ndata: {data}\n\n".encode()


def _event_id(frame: dict[str, Any]) -> str | None:
    """Where a retry goes on from after this event: ``{stream_id}:{next index}``."""
    if frame["type"] == "stream.delta":
        return f"{frame['stream_id']}:{frame['index'] + 1}"
    if frame["type"] == "stream.start":
        return f"{frame['stream_id']}:0"
    return None


def _parse_event_id(value: str | None) -> tuple[str | None, int]:
    stream_id, _, offset = (value or "").strip().rpartition(":")
    if not stream_id or not offset.isdigit():
        return None, 0
    return stream_id, int(offset)
