"""What each client frame does. The WebSocket endpoint feeds frames in; replies and
room events go out through the connection's outbox. Business rules stay in the
services; this module only translates between frames and service calls."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar

from realtime.connection import Connection
from realtime.frames import ClientFrame, FrameError, encode, error_frame, parse_client_frame
from realtime.hub import Hub
from server.errors import (
    BadRequest,
    InternalError,
    NotFound,
    ParleyError,
    RateLimited,
    Unauthorized,
)
from server.services.sessions import parse_id

if TYPE_CHECKING:
    from server.container import Container

log = logging.getLogger("parley.ws")

ABUSE_CLOSE_CODE = 4429
TOKEN_EXPIRED_CLOSE_CODE = 4401

FrameMethod = Callable[[ClientFrame], Awaitable[dict[str, Any] | None]]


class ConnectionHandler:
    # Per idle connection this is three references: no per-instance dict, no table of
    # bound methods, no Event. A ``refresh`` moves ``conn.expires_at``, which the expiry
    # timer (server/ws.py) re-reads; nothing needs to wait for it.
    __slots__ = ("conn", "container", "hub")

    # Frame type -> method name, once per class (a subclass's override is honoured).
    FRAME_METHODS: ClassVar[dict[str, str]] = {
        "join": "join",
        "leave": "leave",
        "message": "message",
        "typing": "typing",
        "cancel": "cancel",
        "resume": "resume",
        "refresh": "refresh",
        "ping": "ping",
    }

    def __init__(self, container: Container, hub: Hub, conn: Connection) -> None:
        self.container = container
        self.hub = hub
        self.conn = conn

    async def handle_text(self, text: str) -> None:
        frame_id: str | None = None
        try:
            frame = parse_client_frame(text)
            frame_id = frame.id
            self.container.metrics.frames_in.labels(frame.type).inc()
            method: FrameMethod = getattr(self, self.FRAME_METHODS[frame.type])
            reply = await method(frame)
            if reply is not None:
                if frame_id is not None:
                    reply["id"] = frame_id
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

    def _strike(self) -> None:
        self.conn.strikes += 1
        if self.conn.strikes >= self.container.settings.abuse_strikes_before_close:
            self.conn.close(ABUSE_CLOSE_CODE, "closed for repeated abuse")

    # Frames ---------------------------------------------------------------------------

    async def join(self, frame: ClientFrame) -> None:
        session_id = parse_id(frame["session_id"])
        sid = str(session_id)
        await self.container.sessions.require_member(self._principal(), session_id)
        fresh = await self.hub.begin_join(self.conn, sid)
        try:
            last_seq, history, recovered = await self.container.sessions.join_state(
                session_id, frame["since_seq"], self.container.settings.replay_limit
            )
            members = await self.hub.presence.members(sid)
            running = await self.hub.stream_log.running(sid)
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
            self.hub.finish_join(self.conn, sid, last_seq)
            generations = self.container.extras.get("generations")
            if generations is not None:
                generations.warm(session_id, uuid.UUID(self.conn.user_id))

    async def leave(self, frame: ClientFrame) -> dict[str, Any]:
        session_id = parse_id(frame["session_id"])
        if not await self.hub.leave(self.conn, str(session_id)):
            raise NotFound("not in this session")
        await self.container.sessions.touch([session_id])
        return {"type": "left", "session_id": str(session_id)}

    async def message(self, frame: ClientFrame) -> dict[str, Any]:
        session_id = parse_id(frame["session_id"])
        await self.container.limiter.hit(
            self.container.message_limit,
            self.conn.user_id,
            "too many messages, slow down",
        )
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
        generations = self.container.extras.get("generations")
        if generations is None:
            raise NotFound("stream not found")
        await generations.cancel(str(session_id), frame["stream_id"], self.conn.user_id)
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
