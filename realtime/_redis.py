"""What the Redis implementations share: client settings, error mapping, batching.

Only ``*_redis.py`` modules import this, so that the memory implementations never
import the driver.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError
from redis.retry import Retry

from errors import InternalError, ParleyError, Unavailable

# OSError covers refused connections that the driver lets through unwrapped.
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError)

CONNECT_TIMEOUT_S = 2.0
COMMAND_TIMEOUT_S = 5.0

# A connection with no read timeout (the bus's subscriber) learns of a peer that
# vanished without a reset from TCP keepalive: probed after 30 s of silence, given up
# after three unanswered probes 10 s apart. Linux names; elsewhere the OS defaults.
KEEPALIVE_OPTIONS: dict[int, int] = {
    option: value
    for name, value in (("TCP_KEEPIDLE", 30), ("TCP_KEEPINTVL", 10), ("TCP_KEEPCNT", 3))
    if (option := getattr(socket, name, None)) is not None
}

Command = Sequence[Any]

# Recent redis-py (8 here) listens for Redis "maintenance notifications" by default, and
# while it does, its pool no longer checks a connection it hands out: the first command
# after a Redis restart went out on the dead connection and failed. Parley needs none.
NO_MAINTENANCE_NOTIFICATIONS: dict[str, Any]
try:
    from redis.maint_notifications import MaintNotificationsConfig
except ImportError:  # older redis-py: no such thing, the check always runs
    NO_MAINTENANCE_NOTIFICATIONS = {}
else:
    NO_MAINTENANCE_NOTIFICATIONS = {
        "maint_notifications_config": MaintNotificationsConfig(enabled=False)
    }


def connect(redis_url: str, *, decode_responses: bool = False) -> Redis:
    """A pooled client that fails fast instead of retrying.

    Retries are off because a pipeline that broke half way would be sent again
    whole, doubling its RPUSHes and PUBLISHes; callers see ``Unavailable`` instead.
    """
    return Redis.from_url(
        redis_url,
        retry=Retry(NoBackoff(), 0),
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=COMMAND_TIMEOUT_S,
        socket_keepalive=True,
        decode_responses=decode_responses,
        **NO_MAINTENANCE_NOTIFICATIONS,
    )


def to_parley_error(exc: BaseException, what: str) -> ParleyError:
    """The ``errors`` class for a driver failure; the caller chains ``exc``."""
    if isinstance(exc, ResponseError):
        # The server understood and refused: a bug on our side, not an outage.
        return InternalError(f"redis refused {what}: {exc}")
    return Unavailable(f"redis is unavailable ({what})")


class PipelineBatcher:
    """Sends the commands issued within one event-loop iteration as one pipeline.

    At most one pipeline is in flight; whatever is issued meanwhile waits and goes
    in the next one. So commands reach Redis in the order they were issued, across
    callers too, and a busy node sends fewer, larger pipelines.
    """

    def __init__(self, redis: Redis, what: str) -> None:
        self._redis = redis
        self._what = what
        self._queue: list[tuple[Sequence[Command], asyncio.Future[list[Any]]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False

    async def execute(self, *commands: Command) -> list[Any]:
        """Run ``commands`` in order; their replies, or ``Unavailable``/``InternalError``."""
        if self._closed:
            raise Unavailable(f"{self._what} is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._queue.append((commands, future))
        if self._flusher is None:
            # The task starts on the next iteration: everything issued before then joins.
            self._flusher = loop.create_task(self._flush(), name=f"redis-batch:{self._what}")
        return await future

    async def close(self) -> None:
        """Stops sending; waiting callers get ``Unavailable``."""
        self._closed = True
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            flusher.cancel()
            await asyncio.gather(flusher, return_exceptions=True)
        self._fail(self._queue, None)
        self._queue = []

    async def _flush(self) -> None:
        batch: list[tuple[Sequence[Command], asyncio.Future[list[Any]]]] = []
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                await self._send(batch)
                batch = []
        finally:
            # Reached only when cancelled mid-send, or with an empty batch.
            self._fail(batch, None)
            self._flusher = None

    async def _send(self, batch: list[tuple[Sequence[Command], asyncio.Future[list[Any]]]]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for commands, _ in batch:
            for command in commands:
                pipe.execute_command(*command)
        try:
            replies = await pipe.execute(raise_on_error=False)
        except REDIS_ERRORS as exc:
            self._fail(batch, exc)
            return
        at = 0
        for commands, future in batch:
            mine = replies[at : at + len(commands)]
            at += len(commands)
            if future.done():  # the caller was cancelled; its commands went anyway
                continue
            failure = next((r for r in mine if isinstance(r, Exception)), None)
            if failure is None:
                future.set_result(mine)
            else:
                error = to_parley_error(failure, self._what)
                error.__cause__ = failure
                future.set_exception(error)

    def _fail(
        self,
        batch: list[tuple[Sequence[Command], asyncio.Future[list[Any]]]],
        cause: BaseException | None,
    ) -> None:
        for _, future in batch:
            if not future.done():
                error = (
                    to_parley_error(cause, self._what)
                    if cause is not None
                    else Unavailable(f"{self._what} is closed")
                )
                error.__cause__ = cause
                future.set_exception(error)
