"""What the chaos suite breaks, and what it checks afterwards.

- :class:`ChaosRedis`: a ``redis-server`` of the test's own on a fixed free port, so it
  can be killed (SIGKILL), paused (SIGSTOP/SIGCONT) and started again on the same port
  without touching the shared Redis.
- :class:`PgProxy`: an asyncio TCP proxy in front of PostgreSQL that can cut every
  connection, refuse new ones, hold traffic (a blackhole that heals) or slow replies.
- :class:`Member`: a real WebSocket client that keeps every frame, and the invariants the
  issue names, checked on what each member saw: every acknowledged message once and in
  ``seq`` order, every ``stream.start`` with exactly one ``stream.end``, each delta index
  once, the deltas adding up to the stored answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from tests.cluster.conftest import Node, free_port
from tests.conftest import TestUser
from tests.private_redis import PrivateRedis
from tests.wsclient import Frame, WSClient

# -- Redis ----------------------------------------------------------------------------


class ChaosRedis(PrivateRedis):
    """The cluster suite's private Redis, plus a pause; ``start`` after ``stop`` comes
    back on the same port, empty (``--save ""``), the way a restarted cache does."""

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a stopped process dies on CONT
        super().stop()


# -- PostgreSQL -----------------------------------------------------------------------


class PgProxy:
    """A TCP proxy on a free loopback port in front of ``upstream`` (host, port).

    Modes for new connections: ``open``; ``refuse`` (accepted, then reset at once, as a
    database that is down answers); ``blackhole`` (accepted, then nothing flows until the
    mode changes: traffic on connections already open is held too, and delivered when
    the proxy heals, like a network partition). ``slow_s`` delays every chunk from the
    database. ``cut()`` resets every open connection.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.mode = "open"
        self.slow_s = 0.0
        self._healed = asyncio.Event()
        self._healed.set()
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def in_front_of(cls, database_url: str) -> PgProxy:
        parts = urlsplit(database_url)
        return cls((parts.hostname or "127.0.0.1", parts.port or 5432))

    def url_for(self, database_url: str) -> str:
        """``database_url`` with its host and port swapped for the proxy's."""
        parts = urlsplit(database_url)
        user = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{self.port}"))

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def stop(self) -> None:
        self.heal()
        if self._server is not None:
            self._server.close()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # The faults.

    def refuse(self) -> None:
        self.mode = "refuse"
        self._healed.set()

    def blackhole(self) -> None:
        self.mode = "blackhole"
        self._healed.clear()

    def heal(self) -> None:
        self.mode = "open"
        self.slow_s = 0.0
        self._healed.set()

    def cut(self) -> None:
        for client, server in list(self._pairs):
            for writer in (client, server):
                with contextlib.suppress(Exception):
                    writer.transport.abort()
        self._pairs.clear()

    def down(self) -> None:
        """The database goes away: open connections reset, new ones refused."""
        self.refuse()
        self.cut()

    # The plumbing.

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "refuse":
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        pair = (writer, up_writer)
        self._pairs.add(pair)
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer, slow=False)),
            asyncio.create_task(self._pump(up_reader, writer, slow=True)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            for w in pair:
                with contextlib.suppress(Exception):
                    w.transport.abort()
            self._pairs.discard(pair)
            self._tasks.difference_update(pumps)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, slow: bool
    ) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                await self._healed.wait()
                if self.mode == "refuse":
                    return
                if slow and self.slow_s:
                    await asyncio.sleep(self.slow_s)
                writer.write(data)
                await writer.drain()


# -- Members and the invariants ---------------------------------------------------------


@dataclass
class Member:
    """A user connected to one node and joined to the room; ``ws.seen`` is every frame."""

    user: TestUser
    node: Node
    session_id: str
    ws: WSClient

    @classmethod
    async def join(cls, user: TestUser, node: Node, session_id: str) -> Member:
        ws, _ = await WSClient.connect(node.ws_url, user.access_token)
        # ``unavailable`` asks the client to try again (Redis coming back, say): a client
        # does, for a bounded while.
        for _ in range(40):
            reply = await ws.request({"type": "join", "session_id": session_id}, timeout=15)
            if reply.get("code") != "unavailable":
                break
            await asyncio.sleep(0.25)
        assert reply["type"] == "joined", reply
        return cls(user, node, session_id, ws)

    async def say(self, content: str, *, reply: str = "none", timeout: float = 15) -> Frame:
        frame = {"type": "message", "session_id": self.session_id, "content": content}
        return await self.ws.request({**frame, "reply": reply}, timeout=timeout)

    async def ask(self, content: str, timeout: float = 15) -> Frame:
        ack = await self.say(content, reply="auto", timeout=timeout)
        assert ack["type"] == "ack" and ack.get("stream_id"), ack
        return ack

    async def end_of(self, stream_id: str, timeout: float = 20) -> Frame:
        """The ``stream.end`` of ``stream_id`` (already seen or still to come)."""
        for frame in self.ws.seen:
            if frame.get("type") == "stream.end" and frame.get("stream_id") == stream_id:
                return frame
        try:
            return await self.ws.next("stream.end", lambda f: f["stream_id"] == stream_id, timeout)
        except (TimeoutError, ConnectionError) as exc:
            raise AssertionError(f"{self}: no stream.end of {stream_id}: {exc!r}") from None

    async def message(self, message_id: str, timeout: float = 20) -> Frame:
        for frame in self.ws.seen:
            if frame.get("type") == "message" and frame["message"]["id"] == message_id:
                return frame
        try:
            return await self.ws.next(
                "message", lambda f: f["message"]["id"] == message_id, timeout
            )
        except (TimeoutError, ConnectionError) as exc:
            raise AssertionError(f"{self}: no message {message_id}: {exc!r}") from None

    def __str__(self) -> str:
        return f"{self.user.name} on node {self.node.name}"

    async def close(self) -> None:
        await self.ws.close()


def messages_seen(member: Member) -> list[dict[str, Any]]:
    return [
        f["message"]
        for f in member.ws.seen
        if f.get("type") == "message" and f.get("session_id") == member.session_id
    ]


def assert_acked_once_in_order(members: list[Member], acked: list[Frame]) -> None:
    """Every acknowledged message reached every member exactly once, and each member's
    messages came in increasing ``seq`` order."""
    wanted = [a["message"]["id"] for a in acked]
    for member in members:
        seen = messages_seen(member)
        counts = Counter(m["id"] for m in seen)
        assert all(counts[i] == 1 for i in wanted), (member.user.name, counts, wanted)
        seqs = [m["seq"] for m in seen]
        assert seqs == sorted(set(seqs)), (member.user.name, seqs)


@dataclass
class StreamSeen:
    starts: int = 0
    ends: list[Frame] = field(default_factory=list)
    indexes: list[int] = field(default_factory=list)
    text: dict[int, str] = field(default_factory=dict)


def streams_seen(frames: list[Frame], session_id: str) -> dict[str, StreamSeen]:
    seen: dict[str, StreamSeen] = {}
    for f in frames:
        if f.get("session_id") != session_id or not str(f.get("type")).startswith("stream."):
            continue
        s = seen.setdefault(f["stream_id"], StreamSeen())
        if f["type"] == "stream.start":
            s.starts += 1
        elif f["type"] == "stream.end":
            s.ends.append(f)
        elif f["type"] == "stream.delta":
            s.indexes.append(f["index"])
            s.text[f["index"]] = f["text"]
    return seen


def assert_streams_whole(members: list[Member], stream_ids: list[str]) -> dict[str, Frame]:
    """Every member saw each stream start once and end once, each delta index once,
    from 0 with no gap, and the deltas add up to the answer in ``stream.end``.
    Returns each stream's ``stream.end`` (as the first member saw it)."""
    ends: dict[str, Frame] = {}
    for member in members:
        seen = streams_seen(member.ws.seen, member.session_id)
        for stream_id in stream_ids:
            s = seen.get(stream_id)
            who = (member.user.name, member.node.name, stream_id)
            assert s is not None, f"{who}: nothing of this stream"
            assert s.starts == 1, (who, "stream.start", s.starts)
            assert len(s.ends) == 1, (who, "stream.end", len(s.ends))
            assert sorted(s.indexes) == list(range(len(s.indexes))), (who, s.indexes)
            assert s.indexes == sorted(s.indexes), (who, "out of order", s.indexes)
            end = s.ends[0]
            text = "".join(s.text[i] for i in sorted(s.text))
            if end.get("message"):
                assert end["message"]["content"] == text, who
            ends.setdefault(stream_id, end)
    return ends


async def stored_messages(node: Node, user: TestUser, session_id: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=node.http_url, timeout=10) as http:
        response = await http.get(
            f"/v1/sessions/{session_id}/messages", params={"limit": 200}, headers=user.headers
        )
    assert response.status_code == 200, response.text
    messages: list[dict[str, Any]] = response.json()["data"]["messages"]
    return messages


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float, what: str, every_s: float = 0.2
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if await check():
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(every_s)


async def assert_answers_stored(
    node: Node, user: TestUser, session_id: str, ends: dict[str, Frame], timeout: float = 30
) -> None:
    """Every answer that ended with text is in the history (by its question), with the
    text its members saw."""

    async def all_there() -> bool:
        stored = await stored_messages(node, user, session_id)
        answers = {m.get("reply_to"): m for m in stored if m["role"] == "assistant"}
        for end in ends.values():
            message = end.get("message")
            if not message:
                continue
            found = answers.get(message.get("reply_to"))
            if found is None or found["content"] != message["content"]:
                return False
        return True

    await eventually(all_there, timeout, "every answer stored")


def assert_no_tracebacks(*nodes: Node) -> None:
    """Expected outages are logged as a line, not a traceback."""
    for node in nodes:
        log = Path(node.log_path).read_text(errors="replace")
        assert "Traceback" not in log, f"{node.name}:\n{log[-4000:]}"


async def timed(awaitable: Awaitable[Any]) -> tuple[Any, float]:
    started = time.monotonic()
    result = await awaitable
    return result, time.monotonic() - started
