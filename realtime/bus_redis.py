"""Bus over Redis pub/sub: one subscriber connection and one reader task per node.

The subscriber connection is driven by hand rather than through redis-py's
``PubSub``, because ``PubSub`` reconnects and resubscribes silently: the hub must
know when a subscription was lost (messages were missed) to catch up from the
database. Here a lost connection marks the bus unhealthy, fails what was in flight,
reconnects with backoff, resubscribes every channel, and then reports the channels
to ``on_gap``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Connection, ConnectionPool
from redis.backoff import NoBackoff
from redis.retry import Retry

from errors import Unavailable
from realtime import _redis
from realtime.bus import GapHandler, LostHandler, MessageHandler
from realtime.bus_batch import PublishBatcher, split
from realtime.keys import DEFAULT_PREFIX, Keys

log = logging.getLogger(__name__)

RECONNECT_FIRST_DELAY_S = 0.05
RECONNECT_MAX_DELAY_S = 5.0
_REDIS_ERRORS_OR_TIMEOUT: tuple[type[BaseException], ...] = (*_redis.REDIS_ERRORS, TimeoutError)


class RedisBus:
    """A ``Bus`` through Redis. At most once; in publish order per node and channel.

    Channel names are given under the default prefix (``keys.room_channel``) and
    moved under ``prefix`` on the wire; handlers receive them as given.
    """

    def __init__(
        self,
        redis_url: str,
        on_message: MessageHandler,
        on_gap: GapHandler | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        # Only used to build the subscriber connection from the URL. No socket timeout,
        # said explicitly: redis-py 8 defaults to 5 s, and the reader's read falls back
        # to it, so a quiet channel was dropped every 5 s and a node paused for longer
        # threw away the messages waiting in its socket. A quiet channel is not a dead
        # one; TCP keepalive finds dead peers, the handshake has its own deadline.
        self._subscriber_pool = ConnectionPool.from_url(
            redis_url,
            socket_timeout=None,
            socket_connect_timeout=_redis.CONNECT_TIMEOUT_S,
            socket_keepalive=True,
            socket_keepalive_options=_redis.KEEPALIVE_OPTIONS,
            retry=Retry(NoBackoff(), 0),  # the reader's loop is the one that retries
            # RESP2: pub/sub replies come back from read_response as plain arrays
            # (under RESP3 redis-py diverts them to a push handler).
            protocol=2,
        )
        self._on_message = on_message
        self._on_gap = on_gap
        self.on_lost: LostHandler | None = None
        self._keys = Keys(prefix)
        self._redis = _redis.connect(redis_url)
        self._batcher = _redis.PipelineBatcher(self._redis, "bus publish")
        # What one channel gets within an event-loop turn goes as one PUBLISH: one
        # message for Redis to fan out and for every node's reader to parse.
        self._publishes = PublishBatcher(self._send_batch, "bus publish")
        # Channels this node wants, confirmed or not: logical name -> wire name, and back.
        self._channels: dict[str, bytes] = {}
        self._by_wire: dict[bytes, str] = {}
        # SUBSCRIBEs sent and not yet confirmed, and who waits for their confirmation.
        self._unconfirmed: dict[bytes, int] = {}
        self._pending: dict[bytes, asyncio.Future[None]] = {}
        self._conn: Connection | None = None
        self._connection_id: int | None = None
        self._healthy = False
        self._reader: asyncio.Task[None] | None = None
        self._closing = False
        self._gap_tasks: set[asyncio.Task[None]] = set()
        # Connections lost and made again since start (diagnostics and tests).
        self.reconnects = 0

    # Lifecycle

    async def start(self) -> None:
        self._closing = False
        await self._connect()
        self._healthy = True
        self._reader = asyncio.create_task(self._run(), name="redis-bus-reader")

    async def close(self) -> None:
        self._healthy = False
        # The reader checks this too: redis-py can turn the cancellation of a read into
        # a read timeout, which the reader would take for a lost connection.
        self._closing = True
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
        for task in list(self._gap_tasks):
            task.cancel()
        await asyncio.gather(*self._gap_tasks, return_exceptions=True)
        await self._drop_connection()
        self._channels.clear()
        self._by_wire.clear()
        await self._publishes.close()
        await self._batcher.close()
        await self._redis.aclose()

    @property
    def healthy(self) -> bool:
        return self._healthy

    @property
    def connection_id(self) -> int | None:
        """Redis ``CLIENT ID`` of the subscriber connection (diagnostics and tests)."""
        return self._connection_id

    @property
    def channels(self) -> frozenset[str]:
        return frozenset(self._channels)

    # Bus

    async def publish(self, channel: str, data: bytes) -> None:
        if not self._healthy:
            raise Unavailable("the bus is disconnected")
        await self._publishes.publish(channel, data)

    @property
    def publish_counts(self) -> tuple[int, int]:
        """PUBLISHes sent and the messages they carried (diagnostics and tests)."""
        return self._publishes.sent_messages, self._publishes.sent_envelopes

    async def _send_batch(self, items: Sequence[tuple[str, bytes]]) -> None:
        rebase = self._keys.rebase
        await self._batcher.execute(
            *[("PUBLISH", rebase(channel), data) for channel, data in items]
        )

    async def subscribe(self, channel: str) -> None:
        wire = self._channels.get(channel)
        if wire is not None:
            waiting = self._pending.get(wire)
            if waiting is not None:
                await asyncio.shield(waiting)
            return
        conn = self._conn
        # A redis-py connection that is not connected would reconnect by itself on
        # send, behind the reader's back; only the reader reconnects.
        if not self._healthy or conn is None or not conn.is_connected:
            raise Unavailable("the bus is disconnected")
        wire = self._keys.rebase(channel).encode()
        self._channels[channel] = wire
        self._by_wire[wire] = channel
        future = self._expect_confirmation(wire)
        try:
            await conn.send_command("SUBSCRIBE", wire)
        except _redis.REDIS_ERRORS as exc:
            self._forget(channel)
            raise Unavailable("the bus is disconnected") from exc
        try:
            await asyncio.wait_for(asyncio.shield(future), _redis.COMMAND_TIMEOUT_S)
        except TimeoutError as exc:
            self._forget(channel)
            # A slow (paused) Redis may still act on it later: take it back, in order.
            with contextlib.suppress(*_redis.REDIS_ERRORS):
                await conn.send_command("UNSUBSCRIBE", wire)
            raise Unavailable(f"redis did not confirm the subscription to {channel}") from exc

    async def unsubscribe(self, channel: str) -> None:
        wire = self._forget(channel)
        if wire is None:
            return
        conn = self._conn
        if conn is not None and conn.is_connected:
            try:
                await conn.send_command("UNSUBSCRIBE", wire)
            except _redis.REDIS_ERRORS:
                # The connection is going; its subscriptions go with it.
                log.debug("unsubscribe from %s on a broken connection", channel)

    # Internals

    def _count_subscribe(self, wire: bytes) -> None:
        self._unconfirmed[wire] = self._unconfirmed.get(wire, 0) + 1

    def _expect_confirmation(self, wire: bytes) -> asyncio.Future[None]:
        self._count_subscribe(wire)
        future = self._pending.get(wire)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._pending[wire] = future
        return future

    def _forget(self, channel: str) -> bytes | None:
        wire = self._channels.pop(channel, None)
        if wire is not None:
            self._by_wire.pop(wire, None)
            future = self._pending.pop(wire, None)
            if future is not None and not future.done():
                future.set_result(None)
        return wire

    def _dispatch(self, reply: Any) -> None:
        if not isinstance(reply, list) or len(reply) < 3:
            return
        kind, wire = reply[0], reply[1]
        if kind == b"message":
            channel = self._by_wire.get(wire)
            if channel is None:  # unsubscribed meanwhile
                return
            for data in split(reply[2]):
                try:
                    self._on_message(channel, data)
                except Exception:
                    log.exception("bus message handler failed on %s", channel)
        elif kind == b"subscribe":
            left = self._unconfirmed.get(wire, 1) - 1
            if left > 0:
                self._unconfirmed[wire] = left
                return
            self._unconfirmed.pop(wire, None)
            future = self._pending.pop(wire, None)
            if future is not None and not future.done():
                future.set_result(None)

    async def _connect(self) -> None:
        """Opens the subscriber connection and (re)subscribes every wanted channel."""
        conn: Connection = self._subscriber_pool.make_connection()
        try:
            # The connection has no read timeout (see __init__), so the handshake gets a
            # deadline of its own: a paused Redis accepts connections and answers nothing.
            async with asyncio.timeout(_redis.CONNECT_TIMEOUT_S + _redis.COMMAND_TIMEOUT_S):
                await conn.connect()
                await conn.send_command("CLIENT", "SETNAME", f"{self._keys.prefix}-bus")
                await conn.read_response()
                await conn.send_command("CLIENT", "ID")
                connection_id = int(await conn.read_response())
                self._unconfirmed.clear()
                wires = list(self._channels.values())
                for wire in wires:
                    self._count_subscribe(wire)
                if wires:
                    await conn.send_command("SUBSCRIBE", *wires)
                # Messages may come between the confirmations; dispatched as usual.
                while any(wire in self._unconfirmed for wire in wires):
                    self._dispatch(await conn.read_response())
        except _REDIS_ERRORS_OR_TIMEOUT as exc:
            await conn.disconnect(nowait=True)
            raise Unavailable("cannot connect the bus to redis") from exc
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        self._conn = conn
        self._connection_id = connection_id

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        self._connection_id = None
        self._unconfirmed.clear()
        # Subscribes in flight were never confirmed: their callers get an error and
        # the channel is not kept, so the hub's state and ours agree.
        for wire, future in list(self._pending.items()):
            channel = self._by_wire.pop(wire, None)
            if channel is not None:
                self._channels.pop(channel, None)
            if not future.done():
                future.set_exception(Unavailable("the bus lost its connection"))
                future.exception()  # retrieved: nobody may be waiting any more
        self._pending.clear()
        if conn is not None:
            await conn.disconnect(nowait=True)

    async def _run(self) -> None:
        while True:
            conn = self._conn
            assert conn is not None
            try:
                while True:
                    self._dispatch(await conn.read_response(timeout=None))
            except _redis.REDIS_ERRORS as exc:
                if self._closing:
                    return
                log.warning("bus lost its redis connection: %s", exc)
            self._healthy = False
            if self.on_lost is not None:
                try:
                    self.on_lost()
                except Exception:
                    log.exception("bus on_lost handler failed")
            await self._drop_connection()
            lost = frozenset(self._channels)
            await self._reconnect()
            if self._closing:
                return
            self.reconnects += 1
            self._healthy = True
            # Only channels still wanted: those unsubscribed during the outage need no
            # catch-up. Reported even when empty: it also says the bus is back.
            gap = lost & frozenset(self._channels)
            if self._on_gap is not None:
                task = asyncio.create_task(self._report_gap(gap), name="redis-bus-gap")
                self._gap_tasks.add(task)
                task.add_done_callback(self._gap_tasks.discard)

    async def _reconnect(self) -> None:
        delay = 0.0
        while not self._closing:
            try:
                await self._connect()
                log.info("bus reconnected to redis")
                return
            except Unavailable:
                delay = min(RECONNECT_MAX_DELAY_S, max(RECONNECT_FIRST_DELAY_S, delay * 2))
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    async def _report_gap(self, channels: frozenset[str]) -> None:
        assert self._on_gap is not None
        try:
            await self._on_gap(channels)
        except Exception:
            log.exception("bus gap handler failed for %d channels", len(channels))
