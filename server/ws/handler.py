"""What each client frame does. The WebSocket endpoint feeds frames in; replies and
room events go out through the connection's outbox. Business rules stay in the
services; this module only translates between frames and service calls."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar

from errors import (
    BadRequest,
    InternalError,
    NotFound,
    ParleyError,
    RateLimited,
    Unauthorized,
)
from realtime.close_codes import CloseCode
from realtime.connection import Connection
from realtime.frames import ClientFrame, FrameError, encode, error_frame, parse_client_frame
from realtime.hub import Hub
from server.services.sessions import parse_id

if TYPE_CHECKING:
    from server.container import Container

log = logging.getLogger("parley.ws")

FrameMethod = Callable[[ClientFrame], Awaitable[dict[str, Any] | None]]

# Frames of one connection waiting behind the one being handled; past this the reader
# stops reading (back pressure) until they are done.
MAX_QUEUED_FRAMES = 16


class ConnectionHandler:
    # Per idle connection this is three references: no per-instance dict, no table of
    # bound methods, no Event. A ``refresh`` moves ``conn.expires_at``, which the expiry
    # timer (server/ws/endpoint.py) re-reads; nothing needs to wait for it.
    __slots__ = ("_queued", "_worker", "conn", "container", "hub")

    # Frame type -> method name, once per class (a subclass's override is honoured).
    FRAME_METHODS: ClassVar[dict[str, str]] = {
        "join": "join",
        "leave": "leave",
        "message": "message",
        "typing": "typing",
        "cancel": "cancel",
        "resume": "resume",
        "regenerate": "regenerate",
        "edit": "edit",
        "select_version": "select_version",
        "refresh": "refresh",
        "ping": "ping",
    }

    def __init__(self, container: Container, hub: Hub, conn: Connection) -> None:
        self.container = container
        self.hub = hub
        self.conn = conn
        # Frames waiting for the worker, and the worker: both only while a frame is
        # being handled (an idle connection holds neither).
        self._queued: deque[ClientFrame] | None = None
        self._worker: asyncio.Task[None] | None = None

    async def receive_text(self, text: str) -> None:
        """A frame from the reader. ``ping`` is answered at once; every other frame is
        handled in order, one at a time, by a worker task, so that a frame waiting on
        the database (a ``message`` in a partition, up to its statement timeout) holds
        neither the reader nor the ``ping`` behind it. A ``pong`` may thus overtake
        the replies of frames sent before its ``ping``; each reply carries its ``id``.
        Returns at once unless ``MAX_QUEUED_FRAMES`` wait already."""
        frame = await self._parse(text)
        if frame is None:
            return
        if frame.type == "ping":
            await self._dispatch(frame)
            return
        if self._queued is None:
            self._queued = deque()
        self._queued.append(frame)
        if self._worker is None:
            self._worker = asyncio.create_task(self._work(), name=f"ws-frames-{self.conn.conn_id}")
        elif len(self._queued) >= MAX_QUEUED_FRAMES:
            await asyncio.wait([self._worker])

    async def stop(self) -> None:
        """The connection ended: the frames it sent before its end are still handled,
        as they were when the reader handled each before reading the next (a client
        may send a ``message`` and close at once). Cancelled if the caller is."""
        worker = self._worker
        if worker is None:
            return
        try:
            await asyncio.wait([worker])
        except asyncio.CancelledError:
            worker.cancel()
            raise

    async def _work(self) -> None:
        try:
            while self._queued and self.conn.closing is None:
                await self._dispatch(self._queued.popleft())
        finally:
            self._queued = self._worker = None

    async def handle_text(self, text: str) -> None:
        """One frame, from parsing to its reply, in the caller's task."""
        frame = await self._parse(text)
        if frame is not None:
            await self._dispatch(frame)

    async def _parse(self, text: str) -> ClientFrame | None:
        try:
            frame = parse_client_frame(text)
        except FrameError as exc:
            # A bad frame costs its sender too; over the limit, that is what it hears.
            if await self._charged(exc.frame_id):
                self._send_error(exc, exc.frame_id)
            return None
        if not await self._charged(frame.id):
            return None
        self.container.metrics.frames_in.labels(frame.type).inc()
        return frame

    async def _charged(self, frame_id: str | None) -> bool:
        """Counts a frame against its connection's limit; False (and the client told)
        when it is over."""
        try:
            await self._charge_frame()
        except RateLimited as exc:
            self._send_error(exc, frame_id)
            self._strike()
            return False
        return True

    async def _dispatch(self, frame: ClientFrame) -> None:
        frame_id = frame.id
        try:
            method: FrameMethod = getattr(self, self.FRAME_METHODS[frame.type])
            reply = await method(frame)
            if reply is None:
                return
            if frame_id is not None:
                reply["id"] = frame_id
            elif reply["type"] in ("ack", "pong"):
                return  # a frame without an id asked for no acknowledgement
            self.conn.send(encode(reply))
        except FrameError as exc:
            self._send_error(exc, exc.frame_id)
        except ParleyError as exc:
            self._send_error(exc, frame_id)
            if isinstance(exc, RateLimited):
                self._strike()
        except Exception:
            log.exception("frame handling failed")
            self._send_error(InternalError("internal error"), frame_id)

    def handle_binary(self) -> None:
        self._send_error(BadRequest("binary frames are not accepted; send JSON text"), None)

    def _send_error(self, exc: ParleyError, frame_id: str | None) -> None:
        self.conn.send(encode(error_frame(exc, frame_id)))

    async def _charge_frame(self) -> None:
        """Every frame, of any type, counts against its connection's frame limit."""
        container = self.container
        await container.limiter.hit(
            container.frame_limit,
            self.conn.conn_id,
            "too many frames, slow down",
            local=True,
        )

    async def _charge_join(self) -> None:
        container = self.container
        await container.limiter.hit(
            container.join_limit, self.conn.user_id, "too many joins, slow down"
        )

    def _strike(self) -> None:
        self.conn.strikes += 1
        if self.conn.strikes >= self.container.settings.abuse_strikes_before_close:
            self.conn.close(CloseCode.ABUSE, "closed for repeated abuse")

    # Frames ---------------------------------------------------------------------------

    async def join(self, frame: ClientFrame) -> None:
        session_id = parse_id(frame["session_id"])
        sid = str(session_id)
        await self._charge_join()
        await self.container.sessions.require_member(self._principal(), session_id)
        fresh = await self.hub.begin_join(self.conn, sid)
        try:
            # The running streams before the history: a stream that ends in between is
            # then in both (its resume finds the end), rather than in neither.
            running = await self.hub.stream_log.running(sid)
            last_seq, history, recovered = await self.container.sessions.join_state(
                session_id,
                frame["since_seq"],
                self.container.settings.replay_limit,
                self.container.settings.replay_max_chars,
            )
            members = await self.hub.presence.members(sid)
        except BaseException:
            if fresh:
                await self.hub.leave(self.conn, sid)
            raise
        reply: dict[str, Any] = {
            "type": "joined",
            "session_id": sid,
            "last_seq": last_seq,
            "members": [
                {"user_id": m.user_id, "name": m.name, "connections": m.connections}
                for m in members
            ],
            "streams": [{"stream_id": s, "offset": offset} for s, offset in running],
        }
        if history is not None:
            reply["history"] = history
            reply["recovered"] = recovered
        if frame.id is not None:
            reply["id"] = frame.id
        self.conn.send(encode(reply))
        if fresh:
            self.hub.finish_join(self.conn, sid, last_seq, [s for s, _ in running])
            self.container.assistant.warm(session_id, uuid.UUID(self.conn.user_id))

    async def leave(self, frame: ClientFrame) -> dict[str, Any]:
        session_id = parse_id(frame["session_id"])
        await self._charge_join()
        if not await self.hub.leave(self.conn, str(session_id)):
            raise NotFound("not in this session")
        await self.container.sessions.touch([session_id])
        return {"type": "left", "session_id": str(session_id)}

    async def message(self, frame: ClientFrame) -> dict[str, Any]:
        # Only into a room joined on this connection: the answer streams to the room,
        # and a connection outside it would ask a question it never hears answered.
        session_id = parse_id(self._joined(frame))
        # The message quota is charged by ``messages.post``, one for every way in.
        posted = await self.container.messages.post(
            self._principal(),
            session_id,
            content=frame["content"],
            client_msg_id=frame["client_msg_id"],
            reply=frame["reply"],
            search=frame["search"],
        )
        reply: dict[str, Any] = {"type": "ack", "message": posted.message}
        if posted.stream_id is not None:
            reply["stream_id"] = posted.stream_id
        return reply

    async def typing(self, frame: ClientFrame) -> dict[str, Any]:
        sid = self._joined(frame)
        active = bool(frame["active"])
        await self.container.limiter.hit(
            self.container.typing_limit, self.conn.user_id, "typing updates are too frequent"
        )
        if active:
            self.conn.typing_in.add(sid)
        else:
            self.conn.typing_in.discard(sid)
        await self.hub.publish_typing(sid, self.conn.user_id, active=active)
        return {"type": "ack"}

    async def cancel(self, frame: ClientFrame) -> dict[str, Any]:
        session_id = parse_id(frame["session_id"])
        await self.container.sessions.require_member(self._principal(), session_id)
        await self.container.assistant.cancel(
            str(session_id), frame["stream_id"], self.conn.user_id
        )
        return {"type": "ack"}

    async def resume(self, frame: ClientFrame) -> None:
        sid = self._joined(frame)
        stream_id = frame["stream_id"]
        ack = {"type": "ack"} if frame.id is None else {"type": "ack", "id": frame.id}
        found = await self.hub.replay_stream(
            self.conn,
            sid,
            stream_id,
            frame["offset"],
            before_replay=lambda: self.conn.send(encode(ack)),
        )
        if not found:
            raise NotFound("stream not found or no longer held; its message is in the history")

    async def regenerate(self, frame: ClientFrame) -> dict[str, Any]:
        # Into a joined room, as a message: the new answer streams to the room.
        session_id = parse_id(self._joined(frame))
        change = await self.container.versions.regenerate(
            self._principal(), session_id, parse_id(frame["message_id"], "message")
        )
        return {"type": "ack", "message": change.message, "stream_id": change.stream_id}

    async def edit(self, frame: ClientFrame) -> dict[str, Any]:
        session_id = parse_id(self._joined(frame))
        change = await self.container.versions.edit(
            self._principal(),
            session_id,
            parse_id(frame["message_id"], "message"),
            frame["content"],
        )
        return {"type": "ack", "message": change.message, "stream_id": change.stream_id}

    async def select_version(self, frame: ClientFrame) -> dict[str, Any]:
        session_id = parse_id(self._joined(frame))
        change = await self.container.versions.select(
            self._principal(),
            session_id,
            parse_id(frame["message_id"], "message"),
            frame["version"],
        )
        return {"type": "ack", "message": change.message}

    async def refresh(self, frame: ClientFrame) -> dict[str, Any]:
        principal = await self.container.accounts.authenticate(frame["token"])
        if str(principal.user_id) != self.conn.user_id:
            raise Unauthorized("the new token is for another user")
        self.conn.expires_at = principal.expires_at
        self.conn.family = str(principal.family_id) if principal.family_id else None
        return {"type": "ack"}

    async def ping(self, frame: ClientFrame) -> dict[str, Any]:
        return {"type": "pong"}

    # Helpers --------------------------------------------------------------------------

    def _joined(self, frame: ClientFrame) -> str:
        sid = str(parse_id(frame["session_id"]))
        if sid not in self.conn.rooms:
            raise NotFound("join the session first")
        return sid

    def _principal(self) -> Any:
        from server.services.accounts import Principal

        return Principal(
            user_id=uuid.UUID(self.conn.user_id),
            name=self.conn.name,
            role=self.conn.role,
            expires_at=self.conn.expires_at,
        )
