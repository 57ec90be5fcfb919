"""Presence shared through Redis, with dead nodes reaped by the living.

Each node refreshes ``node:{id}`` (TTL two heartbeats) every ``ttl_s / 3`` and
records each of its connections in ``node:{id}:conns``. Every node runs a reaper
every ``ttl_s / 6``; under a short lock, so that one node reaps at a time, it
removes the connections of every node whose key is gone and hands the resulting
"leave" changes to ``on_reaped``. A SIGKILLed node's users therefore leave within
``ttl_s`` as seen by the others.

Adding, removing and reaping are Lua scripts, so that "first connection" and "last
connection" are decided atomically across nodes. The scripts build room key names
from the prefix, which is fine on one Redis (not on Redis Cluster).

A node that was taken for dead (a pause longer than the node TTL) finds its key
gone at its next heartbeat; it then re-registers its connections and reports the
resulting "join" changes through ``on_reaped`` as well.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
from collections.abc import Sequence
from typing import Any, cast

from errors import ParleyError, Unavailable
from realtime import _redis
from realtime.keys import (
    DEFAULT_PREFIX,
    MEMBER_SEPARATOR,
    ONLINE_TTL_S,
    PRESENCE_TTL_S,
    REAPER_LOCK_TTL_MS,
    Keys,
    heartbeat_interval_s,
    node_ttl_ms,
    reaper_interval_s,
)
from realtime.presence import (
    Member,
    NodeGoneHandler,
    PresenceChange,
    ReapedHandler,
    sort_members,
)

log = logging.getLogger(__name__)

REAP_BATCH = 500  # connections per script call, so that no call blocks Redis for long

# drop(room_head, session_id, conn_id) -> {user_id, name} when it was the user's last.
_DROP = """
local function drop(head, sid, conn)
  local room = head .. sid
  local uid = redis.call('HGET', room .. ':conns', conn)
  if not uid then return nil end
  redis.call('HDEL', room .. ':conns', conn)
  if redis.call('HINCRBY', room .. ':users', uid, -1) > 0 then return nil end
  redis.call('HDEL', room .. ':users', uid)
  local name = redis.call('HGET', room .. ':names', uid) or ''
  redis.call('HDEL', room .. ':names', uid)
  return {uid, name}
end
"""

# KEYS: node conns. ARGV: room head, session, conn, user, name, node member.
# Returns the user's connection count in the room after adding, 0 if already there.
_ADD = """
local room = ARGV[1] .. ARGV[2]
if redis.call('HSETNX', room .. ':conns', ARGV[3], ARGV[4]) == 0 then return 0 end
redis.call('SADD', KEYS[1], ARGV[6])
redis.call('HSET', room .. ':names', ARGV[4], ARGV[5])
return redis.call('HINCRBY', room .. ':users', ARGV[4], 1)
"""

# KEYS: node conns. ARGV: room head, session, conn, node member.
_REMOVE = (
    _DROP
    + """
redis.call('SREM', KEYS[1], ARGV[4])
local gone = drop(ARGV[1], ARGV[2], ARGV[3])
if gone then return gone end
return false
"""
)

# KEYS: node key, node conns, nodes. ARGV: node id, room head, separator, batch, force.
# Returns {status, sid, uid, name, sid, uid, name, ...}; status 0: more to reap,
# 1: the node is alive (nothing done), 2: the node is gone and fully reaped.
_REAP = (
    _DROP
    + """
if ARGV[5] == '0' and redis.call('EXISTS', KEYS[1]) == 1 then return {1} end
local out = {0}
for _, member in ipairs(redis.call('SPOP', KEYS[2], tonumber(ARGV[4]))) do
  local cut = string.find(member, ARGV[3], 1, true)
  if cut then
    local sid = string.sub(member, 1, cut - 1)
    local gone = drop(ARGV[2], sid, string.sub(member, cut + #ARGV[3]))
    if gone then
      out[#out + 1] = sid
      out[#out + 1] = gone[1]
      out[#out + 1] = gone[2]
    end
  end
end
if redis.call('SCARD', KEYS[2]) == 0 then
  redis.call('SREM', KEYS[3], ARGV[1])
  out[1] = 2
end
return out
"""
)

# KEYS: node key, nodes. ARGV: ttl ms, node id. Returns 1 if the key was alive.
_HEARTBEAT = """
local alive = redis.call('SET', KEYS[1], '1', 'PX', ARGV[1], 'XX')
redis.call('SADD', KEYS[2], ARGV[2])
if alive then return 1 end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
return 0
"""

# KEYS: lock. ARGV: owner.
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisPresence:
    """A ``Presence`` shared by every node through one Redis."""

    def __init__(
        self,
        redis_url: str,
        node_id: str,
        on_reaped: ReapedHandler | None = None,
        *,
        ttl_s: float = PRESENCE_TTL_S,
        online_ttl_s: float = ONLINE_TTL_S,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        if MEMBER_SEPARATOR in node_id:
            raise ValueError("node_id must not contain the member separator")
        self.node_id = node_id
        # None until the hub that publishes the changes exists (it needs this presence).
        self.on_reaped = on_reaped
        self.on_node_gone: NodeGoneHandler | None = None
        self._ttl_s = ttl_s
        self._online_ttl_ms = max(1, int(online_ttl_s * 1000))
        self._keys = Keys(prefix)
        self._redis = _redis.connect(redis_url, decode_responses=True)
        self._add = self._redis.register_script(_ADD)
        self._remove = self._redis.register_script(_REMOVE)
        self._reap = self._redis.register_script(_REAP)
        self._heartbeat = self._redis.register_script(_HEARTBEAT)
        self._unlock = self._redis.register_script(_UNLOCK)
        # This node's connections, to re-register them if it was taken for dead.
        self._local: dict[tuple[str, str], tuple[str, str]] = {}
        self._unremoved: set[tuple[str, str]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    # Lifecycle

    async def start(self) -> None:
        await self._call(self._beat(), "presence heartbeat")
        self._tasks = [
            asyncio.create_task(self._heartbeat_loop(), name=f"presence-heartbeat:{self.node_id}"),
            asyncio.create_task(self._reaper_loop(), name=f"presence-reaper:{self.node_id}"),
        ]

    async def close(self) -> None:
        """Removes this node's entries; the leaves that causes go to ``on_reaped``
        (while the hub's bus is still open) so that other nodes see the users go."""
        self._closed = True
        await self._stop_tasks()
        leaves: list[PresenceChange] = []
        try:
            await self._redis.delete(self._keys.node(self.node_id))
            status = 0
            while status == 0:
                status, reaped = await self._reap_node(self.node_id, force=True)
                leaves.extend(reaped)
        except _redis.REDIS_ERRORS as exc:
            # The entries go the way of a dead node's: another node reaps them.
            log.warning("presence could not clean up node %s: %s", self.node_id, exc)
        self._local.clear()
        await self._redis.aclose()
        if leaves:
            await self._report(leaves)

    async def abandon(self) -> None:
        """Stops without removing anything, as a SIGKILL would: for failure tests."""
        self._closed = True
        await self._stop_tasks()
        await self._redis.aclose()

    # Presence

    async def add(
        self, session_id: str, conn_id: str, user_id: str, name: str
    ) -> PresenceChange | None:
        count = await self._call(self._add_script(session_id, conn_id, user_id, name), "add")
        self._local[(session_id, conn_id)] = (user_id, name)
        return PresenceChange(session_id, user_id, name, "join") if count == 1 else None

    async def remove(self, session_id: str, conn_id: str) -> PresenceChange | None:
        self._local.pop((session_id, conn_id), None)
        try:
            return await self._call(self._remove_script(session_id, conn_id), "remove")
        except ParleyError:
            # The node lives on, so no reaper would ever remove this entry: the
            # heartbeat retries it and reports the leave through on_reaped.
            self._unremoved.add((session_id, conn_id))
            raise

    async def _remove_script(self, session_id: str, conn_id: str) -> PresenceChange | None:
        gone = await self._remove(
            keys=[self._keys.node_conns(self.node_id)],
            args=[
                self._keys.presence_room_head,
                session_id,
                conn_id,
                self._member(session_id, conn_id),
            ],
        )
        if not gone:
            return None
        user_id, name = gone
        return PresenceChange(session_id, user_id, name, "leave")

    async def members(self, session_id: str) -> list[Member]:
        async def read() -> list[Any]:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(self._keys.presence_users(session_id))
                pipe.hgetall(self._keys.presence_names(session_id))
                return await pipe.execute()  # type: ignore[no-any-return]

        counts, names = await self._call(read(), "members")
        return sort_members(
            [Member(uid, names.get(uid, ""), int(count)) for uid, count in counts.items()]
        )

    async def occupied(self, session_ids: Sequence[str]) -> set[str]:
        if not session_ids:
            return set()

        async def read() -> list[Any]:
            async with self._redis.pipeline(transaction=False) as pipe:
                for sid in session_ids:
                    pipe.exists(self._keys.presence_users(sid))
                return await pipe.execute()  # type: ignore[no-any-return]

        found = await self._call(read(), "occupied")
        return {sid for sid, exists in zip(session_ids, found, strict=True) if exists}

    async def touch_online(self, user_id: str) -> None:
        await self._call(
            self._redis.set(self._keys.online(user_id), "1", px=self._online_ttl_ms),
            "touch online",
        )

    async def is_online(self, user_id: str) -> bool:
        return bool(await self._call(self._redis.exists(self._keys.online(user_id)), "online"))

    # Heartbeat and reaper

    async def reap_once(self) -> list[PresenceChange]:
        """Reaps every dead node if no other node is reaping; the resulting leaves."""
        lock, owner = self._keys.reaper_lock, self.node_id
        if not await self._redis.set(lock, owner, nx=True, px=REAPER_LOCK_TTL_MS):
            return []
        changes: list[PresenceChange] = []
        gone: list[str] = []
        try:
            nodes = cast(set[str], await self._redis.smembers(self._keys.nodes))
            for node in nodes:
                if node == self.node_id:
                    continue
                status = 0
                while status == 0:
                    status, reaped = await self._reap_node(node, force=False)
                    changes.extend(reaped)
                if status == 2:
                    log.info("presence reaped dead node %s", node)
                    gone.append(node)
        finally:
            try:
                await self._unlock(keys=[lock], args=[owner])
            finally:
                # Even when reaping another node failed: a node reaped is out of
                # ``nodes``, and no reaper would come back to it.
                for node in gone:
                    await self._tell_node_gone(node)
        return changes

    # Both loops also stop on ``_closed``: redis-py can turn their cancellation (by
    # ``close``) into a Redis error, which they would log and go on from.

    async def _heartbeat_loop(self) -> None:
        interval = heartbeat_interval_s(self._ttl_s)
        while not self._closed:
            await asyncio.sleep(interval)
            try:
                changes = await self._call(self._beat(), "presence heartbeat")
            except ParleyError as exc:
                if self._closed:
                    return
                log.warning("presence heartbeat failed: %s", exc)
                continue
            if changes:
                await self._report(changes)

    async def _reaper_loop(self) -> None:
        interval = reaper_interval_s(self._ttl_s)
        while not self._closed:
            # Jitter keeps the nodes from all racing for the lock at once.
            await asyncio.sleep(interval * random.uniform(0.8, 1.0))
            try:
                changes = await self._call(self.reap_once(), "presence reaper")
            except ParleyError as exc:
                if self._closed:
                    return
                log.warning("presence reaper failed: %s", exc)
                continue
            if changes:
                await self._report(changes)

    async def _beat(self) -> list[PresenceChange]:
        """Refreshes the node key and online marks, retries failed removes, and
        re-registers this node's connections if its key had expired."""
        alive = await self._heartbeat(
            keys=[self._keys.node(self.node_id), self._keys.nodes],
            args=[node_ttl_ms(self._ttl_s), self.node_id],
        )
        users = {user_id for user_id, _ in self._local.values()}
        if users:
            async with self._redis.pipeline(transaction=False) as pipe:
                for user_id in users:
                    pipe.set(self._keys.online(user_id), "1", px=self._online_ttl_ms)
                await pipe.execute()
        changes: list[PresenceChange] = []
        for session_id, conn_id in list(self._unremoved):
            leave = await self._remove_script(session_id, conn_id)
            self._unremoved.discard((session_id, conn_id))
            if leave is not None:
                changes.append(leave)
        if alive or not self._local:
            return changes
        log.warning("presence node %s was taken for dead; re-registering", self.node_id)
        for (session_id, conn_id), (user_id, name) in list(self._local.items()):
            if await self._add_script(session_id, conn_id, user_id, name) == 1:
                changes.append(PresenceChange(session_id, user_id, name, "join"))
        return changes

    async def _reap_node(self, node: str, *, force: bool) -> tuple[int, list[PresenceChange]]:
        reply = await self._reap(
            keys=[self._keys.node(node), self._keys.node_conns(node), self._keys.nodes],
            args=[
                node,
                self._keys.presence_room_head,
                MEMBER_SEPARATOR,
                REAP_BATCH,
                "1" if force else "0",
            ],
        )
        status, flat = int(reply[0]), reply[1:]
        changes = [
            PresenceChange(flat[i], flat[i + 1], flat[i + 2], "leave")
            for i in range(0, len(flat), 3)
        ]
        return status, changes

    # Helpers

    def _add_script(self, session_id: str, conn_id: str, user_id: str, name: str) -> Any:
        return self._add(
            keys=[self._keys.node_conns(self.node_id)],
            args=[
                self._keys.presence_room_head,
                session_id,
                conn_id,
                user_id,
                name,
                self._member(session_id, conn_id),
            ],
        )

    @staticmethod
    def _member(session_id: str, conn_id: str) -> str:
        return f"{session_id}{MEMBER_SEPARATOR}{conn_id}"

    async def _call(self, awaitable: Any, what: str) -> Any:
        if self._closed:
            # An entry written now would belong to no live node and never be reaped.
            if inspect.iscoroutine(awaitable):
                awaitable.close()  # never awaited, on purpose
            raise Unavailable(f"presence is closed ({what})")
        try:
            return await awaitable
        except _redis.REDIS_ERRORS as exc:
            raise _redis.to_parley_error(exc, f"presence {what}") from exc

    async def _tell_node_gone(self, node: str) -> None:
        if self.on_node_gone is None:
            return
        try:
            await self.on_node_gone(node)
        except Exception:
            log.exception("presence on_node_gone handler failed for node %s", node)

    async def _report(self, changes: list[PresenceChange]) -> None:
        if self.on_reaped is None:
            return
        try:
            await self.on_reaped(changes)
        except Exception:
            log.exception("presence on_reaped handler failed")

    async def _stop_tasks(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
