"""The hub: local fan-out of room events to this node's connections.

Every room event goes through the bus, including to this node's own members (a node
receives its own publications), so there is one delivery path whatever node an
event started on. A node subscribes to a room's channel while it has members there.

Ordering: ``message`` frames and the ``stream.end`` that carries an assistant
message hold a ``seq``; pub/sub from several nodes can deliver them out of order, so
each room releases them through a ``SeqReorderer``. A gap that does not close within
``GAP_WAIT_S`` (or a lost subscription) is filled from the database, which is the
source of truth. Deltas carry an index; each connection keeps a cursor per stream
and fills a gap in it from the stream log, so a client sees every index once, in
order (``realtime/stream_delivery.py``).

Outages: while the bus is down, or a publish fails, this node's members get events
from here only; they are told (a ``bus`` frame, ``degraded`` then ``restored``). Rooms
whose events reached no other node are owed to the peers: once a publish goes through
again, a ``resync`` control message names them, and every node re-reads them from the
database. A node whose own subscription was restored re-reads its rooms itself. So a
message sent in an outage reaches everyone without waiting for a later one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from errors import ParleyError
from realtime import envelope as kinds
from realtime.bus import Bus
from realtime.close_codes import CloseCode
from realtime.connection import Connection, Membership, StreamCursor
from realtime.control import ControlOp
from realtime.envelope import Envelope, pack, unpack
from realtime.frames import BUS_DEGRADED, BUS_RESTORED, bus_notice, encode
from realtime.keys import Keys
from realtime.metrics import HubMetrics
from realtime.presence import Presence, PresenceChange
from realtime.reorder import SeqReorderer
from realtime.stream_delivery import StreamDelivery
from realtime.stream_log import StreamLog

log = logging.getLogger("parley.hub")

GAP_WAIT_S = 0.15
# Rooms named in one resync notice; past this the notice says "every room".
RESYNC_MAX_ROOMS = 1000
RESYNC_FIRST_DELAY_S = 0.05
RESYNC_MAX_DELAY_S = 5.0
FetchMessagesAfter = Callable[[str, int, int], Awaitable[list[dict[str, Any]]]]
ControlHandler = Callable[[dict[str, Any]], Awaitable[None] | None]


@dataclass(eq=False)
class Room:
    session_id: str
    channel: str
    connections: set[Connection] = field(default_factory=set)
    # None until the first local join tells us where the room's seq stands.
    reorder: SeqReorderer[Envelope] | None = None
    early: list[Envelope] = field(default_factory=list)
    gap_task: asyncio.Task[None] | None = None


class Hub:
    def __init__(
        self,
        *,
        bus_factory: Callable[..., Bus],
        presence: Presence,
        stream_log: StreamLog,
        fetch_messages_after: FetchMessagesAfter,
        metrics: HubMetrics,
        keys: Keys,
        on_released: Callable[[Envelope], None] | None = None,
    ) -> None:
        self.bus = bus_factory(self._on_bus_message, self._on_bus_gap)
        self.bus.on_lost = self._on_bus_lost
        # Tells this hub's own resync notices apart from its peers'.
        self._hub_id = uuid.uuid4().hex
        self._degraded = False
        # Rooms whose events went out to this node only (None: too many to name).
        self._owed: set[str] | None = set()
        self._resync_task: asyncio.Task[None] | None = None
        self._bus_back = asyncio.Event()
        self.presence = presence
        self.stream_log = stream_log
        self.streams = StreamDelivery(lambda: self.stream_log, self._spawn)
        self._fetch_after = fetch_messages_after
        self._metrics = metrics
        self._keys = keys
        self.rooms: dict[str, Room] = {}
        self.connections: dict[str, Connection] = {}
        self._channel_locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        # Keyed by ``ControlOp`` (a ``str``, so an op read off the bus finds its handler).
        self.control_handlers: dict[str, ControlHandler] = {
            ControlOp.DISCONNECT_USER: self._control_disconnect_user,
            ControlOp.USER_FRAME: self._control_user_frame,
            ControlOp.REMOVE_MEMBER: self._control_remove_member,
            ControlOp.RESYNC: self._control_resync,
        }
        # Told of each stored message of a room with members here (``message`` and
        # ``stream.end`` envelopes), in seq order, whichever node stored it.
        self.on_released = on_released

    # Lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        await self.bus.start()
        self._bus_back.set()
        await self.bus.subscribe(self._keys.control_channel())
        await self.presence.start()

    async def close(
        self, code: int = CloseCode.GOING_AWAY, reason: str = "server shutting down"
    ) -> None:
        for conn in list(self.connections.values()):
            conn.close(code, reason)
        for task in list(self._tasks):
            task.cancel()
        await self.presence.close()
        await self.bus.close()

    # Connections and rooms ----------------------------------------------------------

    def register(self, conn: Connection) -> None:
        self.connections[conn.conn_id] = conn
        self._metrics.ws_connections.inc()
        if self._degraded:
            conn.send(encode(bus_notice(BUS_DEGRADED)))
        # "Online anywhere" (online:{user_id}); presence heartbeats keep it fresh
        # while the user is in a room.
        self._spawn(self._touch_online(conn.user_id))

    async def _touch_online(self, user_id: str) -> None:
        try:
            await self.presence.touch_online(user_id)
        except ParleyError as exc:
            # Redis is down: expected, and said once by the bus; no traceback per socket.
            log.debug("online mark for %s not recorded: %s", user_id, exc.message)

    async def unregister(self, conn: Connection) -> None:
        self.connections.pop(conn.conn_id, None)
        self._metrics.ws_connections.dec()
        for session_id in list(conn.rooms):
            with contextlib.suppress(Exception):
                await self.leave(conn, session_id)

    async def begin_join(self, conn: Connection, session_id: str, *, presence: bool = True) -> bool:
        """Enter the room's local fan-out; events queue for this connection until
        ``finish_join``. Returns False when the connection was already in the room.
        ``presence=False`` listens without being shown (server-sent event clients)."""
        if session_id in conn.rooms:
            return False
        room = self.rooms.get(session_id)
        if room is None:
            room = Room(session_id, self._keys.room_channel(session_id))
            self.rooms[session_id] = room
            self._metrics.rooms.set(len(self.rooms))
        room.connections.add(conn)
        conn.rooms[session_id] = Membership(floor=0, pending=[])
        shown = False
        try:
            async with self._lock(room.channel):
                await self.bus.subscribe(room.channel)
            if presence:
                shown = True
                change = await self.presence.add(session_id, conn.conn_id, conn.user_id, conn.name)
                if change is not None:
                    await self.publish_presence(change)
        except BaseException:
            # Undone whole: a connection left in the room with its events queued for a
            # joined reply that never comes would be answered "joined" by a retry and
            # then sent nothing, its queue growing.
            await self.leave(conn, session_id, presence=False)
            if shown:  # perhaps recorded before the reply was lost
                with contextlib.suppress(Exception):
                    await self.presence.remove(session_id, conn.conn_id)
            raise
        return True

    def finish_join(
        self, conn: Connection, session_id: str, last_seq: int, streams: Iterable[str] = ()
    ) -> None:
        """The joined reply is queued: release what waited, after ``last_seq``.
        ``streams``: those the reply listed as running; the client resumes them from
        where it is, so only what comes live from now on is this connection's to send
        unasked (the rest of a stream is owed from its start)."""
        for stream_id in streams:
            conn.cursors.setdefault(stream_id, StreamCursor(base=None))
        room = self.rooms[session_id]
        if room.reorder is None:
            room.reorder = SeqReorderer(last_seq)
            early, room.early = room.early, []
            for env in early:
                self._offer_ordered(room, env)
        membership = conn.rooms[session_id]
        pending, membership.pending, membership.floor = membership.pending or [], None, last_seq
        for env in pending:
            self._deliver(conn, env)

    async def leave(self, conn: Connection, session_id: str, *, presence: bool = True) -> bool:
        if conn.rooms.pop(session_id, None) is None:
            return False
        if session_id in conn.typing_in:
            await self.publish_typing(session_id, conn.user_id, active=False)
            conn.typing_in.discard(session_id)
        room = self.rooms.get(session_id)
        if room is not None:
            room.connections.discard(conn)
            if not room.connections:
                self._drop_room(room)
        if presence:
            change = await self.presence.remove(session_id, conn.conn_id)
            if change is not None:
                await self.publish_presence(change)
        return True

    def _drop_room(self, room: Room) -> None:
        del self.rooms[room.session_id]
        self._metrics.rooms.set(len(self.rooms))
        if room.gap_task is not None:
            room.gap_task.cancel()

        async def unsubscribe() -> None:
            async with self._lock(room.channel):
                if room.session_id not in self.rooms:
                    await self.bus.unsubscribe(room.channel)

        self._spawn(unsubscribe())

    def _lock(self, channel: str) -> asyncio.Lock:
        return self._channel_locks.setdefault(channel, asyncio.Lock())

    # Publishing ---------------------------------------------------------------------

    async def publish(self, env: Envelope) -> None:
        env.sent_at = time.time()
        channel = (
            self._keys.control_channel()
            if env.kind == kinds.CONTROL
            else self._keys.room_channel(env.session_id)
        )
        data = pack(env)
        try:
            await self.bus.publish(channel, data)
        except ParleyError as exc:
            # The bus is down. What was stored stays stored; this node's members get
            # the event directly. Other nodes catch up from the database when told
            # (the resync notice, once publishing works again) or when their own
            # subscription comes back and reports the gap.
            log.warning("bus publish failed (%s); delivering locally only", exc.message)
            self._owe(None if env.kind == kinds.CONTROL else env.session_id)
            self._set_degraded(True)
            self._on_bus_message(channel, data)

    async def publish_message(self, session_id: str, message: dict[str, Any]) -> None:
        frame = encode({"type": "message", "session_id": session_id, "message": message})
        await self.publish(Envelope(kinds.MESSAGE, session_id, frame, seq=message["seq"]))

    async def publish_version(self, session_id: str, message: dict[str, Any]) -> None:
        """A message now shows another version (a regeneration, an edit, a switch):
        ``message`` is its row as stored, with ``version`` and ``version_count``."""
        frame = encode({"type": "message.version", "session_id": session_id, "message": message})
        await self.publish(Envelope(kinds.VERSION, session_id, frame))

    async def publish_typing(self, session_id: str, user_id: str, *, active: bool) -> None:
        frame = encode(
            {"type": "typing", "session_id": session_id, "user_id": user_id, "active": active}
        )
        await self.publish(Envelope(kinds.TYPING, session_id, frame, user_id=user_id))

    async def publish_member(
        self, session_id: str, user_id: str, name: str | None, *, change: str
    ) -> None:
        """Tells the room that someone became (``added``) or stopped being (``removed``)
        a member, so that every member's list and names follow without a reload."""
        frame = encode(
            {
                "type": "member",
                "session_id": session_id,
                "user_id": user_id,
                "name": name,
                "change": change,
            }
        )
        await self.publish(Envelope(kinds.MEMBER, session_id, frame, user_id=user_id))

    async def publish_presence(self, change: PresenceChange) -> None:
        frame = encode(
            {
                "type": "presence",
                "session_id": change.session_id,
                "user_id": change.user_id,
                "name": change.name,
                "state": change.state,
            }
        )
        await self.publish(
            Envelope(kinds.PRESENCE, change.session_id, frame, user_id=change.user_id)
        )

    async def publish_reaped(self, changes: list[PresenceChange]) -> None:
        for change in changes:
            await self.publish_presence(change)

    async def publish_stream(
        self,
        session_id: str,
        stream_id: str,
        frame: dict[str, Any],
        *,
        index: int | None = None,
        end_seq: int | None = None,
        is_end: bool = False,
    ) -> None:
        await self.publish(
            Envelope(
                kinds.STREAM,
                session_id,
                encode(frame),
                stream_id=stream_id,
                index=index,
                seq=end_seq,
                stream_end=is_end,
            )
        )

    async def send_control(self, action: dict[str, Any]) -> None:
        await self.publish(Envelope(kinds.CONTROL, "", "{}", action=action))

    async def disconnect_user(
        self, user_id: str, code: int, reason: str, *, family: str | None = None
    ) -> None:
        """Close the user's connections on every node; with ``family``, only those
        opened with that refresh family's credentials."""
        action = {
            "op": ControlOp.DISCONNECT_USER,
            "user_id": user_id,
            "code": code,
            "reason": reason,
        }
        if family is not None:
            action["family"] = family
        await self.send_control(action)

    async def send_to_user(self, user_id: str, frame: dict[str, Any]) -> None:
        """Send ``frame`` to every connection of the user, on every node."""
        await self.send_control({"op": ControlOp.USER_FRAME, "user_id": user_id, "frame": frame})

    async def revoke_membership(self, session_id: str, user_id: str) -> None:
        await self.send_control(
            {"op": ControlOp.REMOVE_MEMBER, "session_id": session_id, "user_id": user_id}
        )

    # Receiving ----------------------------------------------------------------------

    def _on_bus_message(self, channel: str, data: bytes) -> None:
        env = unpack(data)
        if env.kind == kinds.CONTROL:
            self._on_control(env.action or {})
            return
        room = self.rooms.get(env.session_id)
        if room is None:
            return
        if env.sent_at is not None:
            self._metrics.fanout_latency.observe(max(0.0, time.time() - env.sent_at))
        if env.seq is not None:
            self._offer_ordered(room, env)
        else:
            for conn in tuple(room.connections):
                self._deliver(conn, env)

    def _offer_ordered(self, room: Room, env: Envelope) -> None:
        if room.reorder is None:
            room.early.append(env)
            return
        assert env.seq is not None
        if env.stream_end and env.seq <= room.reorder.last_seq:
            # A stream.end that came after its answer was filled in from the database
            # (a gap that outlasted GAP_WAIT_S: the end goes out after the store's
            # commit, and a later message can overtake it). Whoever is watching the
            # stream still gets its end; the cursor goes with it, so only once.
            for conn in tuple(room.connections):
                if env.stream_id in conn.cursors:
                    self._deliver(conn, env)
            return
        for ready in room.reorder.offer(env.seq, env):
            self._release(room, ready)
        if room.reorder.missing() is not None and room.gap_task is None:
            room.gap_task = self._spawn(self._fill_room_gap(room, wait_s=GAP_WAIT_S))

    def _release(self, room: Room, env: Envelope) -> None:
        for conn in tuple(room.connections):
            self._deliver(conn, env)
        if self.on_released is not None:
            try:
                self.on_released(env)
            except Exception:
                log.exception("a listener of released messages failed")

    def _deliver(self, conn: Connection, env: Envelope) -> None:
        """Route one room event to one connection, honouring its join and cursors."""
        membership = conn.rooms.get(env.session_id)
        if membership is None:
            return
        if membership.pending is not None:
            membership.pending.append(env)
            return
        if env.kind == kinds.TYPING and env.user_id == conn.user_id:
            return  # typing is not echoed to its sender
        if env.kind == kinds.PRESENCE and env.user_id == conn.user_id:
            return  # joined.members already told this user about themselves
        if (
            env.seq is not None
            and env.seq <= membership.floor
            and (env.kind == kinds.MESSAGE or env.stream_id not in conn.cursors)
        ):
            return  # covered by the joined reply (a stream the client saw still ends)
        if env.kind == kinds.STREAM and env.stream_id is not None:
            self.streams.deliver(conn, env)
            return
        conn.send(env.frame)
        self._metrics.frames_out.inc()

    async def replay_stream(
        self,
        conn: Connection,
        session_id: str,
        stream_id: str,
        offset: int,
        before_replay: Callable[[], None] | None = None,
    ) -> bool:
        """A ``resume``: see ``StreamDelivery.replay``."""
        return await self.streams.replay(conn, session_id, stream_id, offset, before_replay)

    async def _fill_room_gap(self, room: Room, *, wait_s: float) -> None:
        try:
            await asyncio.sleep(wait_s)
            if room.reorder is None or self.rooms.get(room.session_id) is not room:
                return
            missing = room.reorder.missing()
            if missing is None:
                return
            await self._recover_from_database(room)
            still_missing = room.reorder.missing()
            if still_missing is not None:
                # The database is the truth: a seq it does not hold will never come.
                log.error(
                    "room %s: seq %s missing from the database", room.session_id, still_missing
                )
                for ready in room.reorder.skip_to(still_missing[1]):
                    self._release(room, ready)
        finally:
            room.gap_task = None

    async def _recover_from_database(self, room: Room) -> None:
        """Deliver what the database holds after the last released ``seq``.

        A message recovered this way goes out as a ``message`` frame, assistant
        replies included: the live ``stream.end`` that would have carried one was lost.
        """
        assert room.reorder is not None
        after = room.reorder.last_seq
        while True:
            page = await self._fetch_after(room.session_id, after, 200)
            for message in page:
                frame = encode(
                    {"type": "message", "session_id": room.session_id, "message": message}
                )
                self._offer_ordered(
                    room, Envelope(kinds.MESSAGE, room.session_id, frame, seq=message["seq"])
                )
            if len(page) < 200:
                return
            after = page[-1]["seq"]

    async def _on_bus_gap(self, channels: frozenset[str]) -> None:
        """The subscription was lost for a while: catch every room up from the truth."""
        self._metrics.bus_reconnects.inc()
        await self._recover_rooms(
            [room for room in self.rooms.values() if room.channel in channels], "a bus gap"
        )
        self._bus_back.set()
        if self._resync_task is None:  # else it says "restored" once it got through
            self._set_degraded(False)

    async def _recover_rooms(self, rooms: list[Room], why: str) -> None:
        for room in rooms:
            if room.reorder is None or self.rooms.get(room.session_id) is not room:
                continue
            try:
                await self._recover_from_database(room)
            except ParleyError as exc:
                log.warning("recovering room %s after %s failed: %s", room.session_id, why, exc)
            except Exception:
                log.exception("recovering room %s after %s failed", room.session_id, why)

    # Outages -------------------------------------------------------------------------

    def _on_bus_lost(self) -> None:
        self._bus_back.clear()
        self._set_degraded(True)

    def _set_degraded(self, degraded: bool) -> None:
        """Tell this node's connections, once per change, whether delivery is degraded."""
        if degraded == self._degraded:
            return
        self._degraded = degraded
        self._metrics.bus_degraded.set(1 if degraded else 0)
        if degraded:
            log.warning("bus degraded: members here get events from this node only")
        else:
            log.info("bus restored")
        frame = encode(bus_notice(BUS_DEGRADED if degraded else BUS_RESTORED))
        for conn in list(self.connections.values()):
            conn.send(frame)

    def _owe(self, session_id: str | None) -> None:
        """A publish failed (for ``session_id``'s room, or a control message): tell the
        peers which rooms to re-read as soon as publishing works again."""
        if self._owed is not None and session_id is not None:
            self._owed.add(session_id)
            if len(self._owed) > RESYNC_MAX_ROOMS:
                self._owed = None
        if self._resync_task is None:
            self._resync_task = self._spawn(self._resync())

    async def _resync(self) -> None:
        """Publish a resync notice until one goes through, then until none is owed.

        It is also the probe that ends a degraded spell: a publish can fail while the
        subscription stands (a paused Redis), and then nothing else would say when
        publishing works again. A notice naming no room is harmless.
        """
        delay = 0.0
        try:
            while True:
                await self._bus_back.wait()
                owed, self._owed = self._owed, set()
                action = {
                    "op": ControlOp.RESYNC,
                    "from": self._hub_id,
                    "sessions": None if owed is None else sorted(owed),
                }
                env = Envelope(kinds.CONTROL, "", "{}", action=action, sent_at=time.time())
                try:
                    await self.bus.publish(self._keys.control_channel(), pack(env))
                except ParleyError:
                    self._owed = None if owed is None or self._owed is None else owed | self._owed
                    delay = min(RESYNC_MAX_DELAY_S, max(RESYNC_FIRST_DELAY_S, delay * 2))
                    await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                    continue
                if self._owed is not None and not self._owed:
                    break
                delay = 0.0
        finally:
            self._resync_task = None
        if self.bus.healthy:
            self._set_degraded(False)

    async def _control_resync(self, action: dict[str, Any]) -> None:
        """A peer's events for these rooms reached nobody else: re-read them."""
        if action.get("from") == self._hub_id:
            return
        sessions = action.get("sessions")
        if sessions is None:
            rooms = list(self.rooms.values())
        else:
            rooms = [self.rooms[s] for s in sessions if s in self.rooms]
        await self._recover_rooms(rooms, "a peer's outage")

    # Control ------------------------------------------------------------------------

    def _on_control(self, action: dict[str, Any]) -> None:
        handler = self.control_handlers.get(str(action.get("op")))
        if handler is None:
            return
        result = handler(action)
        if asyncio.iscoroutine(result):
            self._spawn(result)

    def _control_user_frame(self, action: dict[str, Any]) -> None:
        frame = action.get("frame")
        if not isinstance(frame, dict):
            return
        data = encode(frame)
        for conn in list(self.connections.values()):
            if conn.user_id == action.get("user_id"):
                conn.send(data)

    def _control_disconnect_user(self, action: dict[str, Any]) -> None:
        family = action.get("family")
        for conn in list(self.connections.values()):
            if conn.user_id == action.get("user_id") and (family is None or conn.family == family):
                conn.close(
                    int(action.get("code", CloseCode.TOKEN_EXPIRED)), str(action.get("reason", ""))
                )

    async def _control_remove_member(self, action: dict[str, Any]) -> None:
        session_id = str(action.get("session_id"))
        for conn in list(self.connections.values()):
            if conn.user_id == action.get("user_id") and session_id in conn.rooms:
                await self.leave(conn, session_id)
                conn.send(encode({"type": "left", "session_id": session_id, "reason": "removed"}))

    def _spawn(self, coroutine: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("hub task failed", exc_info=task.exception())
