"""``POST /v1/sessions/{id}/messages`` with ``Accept: text/event-stream``.

The request becomes a listener on the room, like a WebSocket member that is not
shown in presence, so it receives the same frames through the same delivery rules
(order, stream cursors). It streams the stored user message and the answer to it as
server-sent events whose ``event:`` is the frame type, and ends after ``stream.end``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.responses import StreamingResponse

from realtime.connection import Connection
from realtime.hub import Hub
from server.container import Container
from server.schemas import MessagePostBody
from server.services.accounts import Principal

SSE_FRAMES = frozenset({"message", "stream.start", "stream.status", "stream.delta", "stream.end"})
SSE_KEEPALIVE_S = 15.0


class SSEStreamer:
    def __init__(self, container: Container, hub: Hub) -> None:
        self._container = container
        self._hub = hub

    async def post_and_stream(
        self, principal: Principal, session_id: uuid.UUID, body: MessagePostBody
    ) -> StreamingResponse:
        sid = str(session_id)
        # No membership read first: ``post`` refuses a non-member before anything is
        # sent, and until it succeeds the listener sends nothing.
        listener = Connection(
            conn_id="sse-" + uuid.uuid4().hex,
            user_id=str(principal.user_id),
            name=principal.name,
            role=principal.role,
            expires_at=None,
            max_outbox=self._container.settings.send_queue_frames,
            on_overflow=lambda _: None,
        )
        await self._hub.begin_join(listener, sid, presence=False)
        try:
            posted = await self._container.messages.post(
                principal,
                session_id,
                content=body.content,
                client_msg_id=body.client_msg_id,
                reply=body.reply,
                search=body.search,
            )
        except BaseException:
            await self._hub.leave(listener, sid, presence=False)
            raise
        message = posted.message
        # Everything after the message before ours is released to the listener.
        self._hub.finish_join(listener, sid, message["seq"] - 1)
        return StreamingResponse(
            self._events(listener, sid, message, posted.stream_id, posted.created),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            status_code=201 if posted.created else 200,
        )

    async def _events(
        self,
        listener: Connection,
        sid: str,
        message: dict[str, Any],
        stream_id: str | None,
        created: bool,
    ) -> AsyncIterator[bytes]:
        try:
            yield _event("message", {"type": "message", "session_id": sid, "message": message})
            if stream_id is None:
                return
            while True:
                batch, closing = await listener.next_batch()
                # What was queued together goes out in one write.
                events: list[bytes] = []
                ended = False
                for text in batch:
                    frame = orjson.loads(text)
                    if frame.get("type") not in SSE_FRAMES or frame.get("stream_id") != stream_id:
                        continue
                    events.append(_event(frame["type"], frame, raw=text))
                    if frame["type"] == "stream.end":
                        ended = True
                        break
                if events:
                    yield b"".join(events)
                if ended or closing is not None:
                    return
        finally:
            await self._hub.leave(listener, sid, presence=False)


def _event(name: str, frame: dict[str, Any], raw: str | None = None) -> bytes:
    data = raw if raw is not None else orjson.dumps(frame).decode()
    return f"event: {name}\ndata: {data}\n\n".encode()
