"""Soak: two nodes, fifty members reconnecting at random, answers every few seconds, a
Redis kill and a node SIGKILL in the middle; what every member missed, at the end.

    .venv/bin/python -m bench.soak --minutes 10      # the run docs/benchmarks.md cites
    .venv/bin/python -m bench.soak --minutes 1 --no-report   # a smoke run

Everything is on 127.0.0.1 and stops by itself: its own ``redis-server`` on a free port,
a fresh PostgreSQL database (dropped afterwards), the loopback fake OpenRouter from
``tests/fakes`` (each answer about 40 deltas over ~1.5 s), two ``parley serve``
processes. The members are ``websockets`` clients written the way the contract asks a
careful client to be: on every (re)connect they join with ``since_seq`` (the last seq
they hold without a gap), page the rest over REST when ``recovered`` is false, and
``resume`` every running stream from the next index they want.

At the end (load stopped, 30 s to settle) it counts, per member:
- lost messages: acknowledged messages (and stored answers) the member never received,
  live or in a join's history;
- duplicated messages: a ``message`` frame delivered twice on one connection;
- unended streams: an acknowledged answer of which the member got neither the one
  ``stream.end`` nor the stored answer in a join's history;
- lost / duplicated deltas: of a stream whose end the member saw, an index it never got,
  or got twice; an index it never got that went out (reached its first member) while
  this member was between connections is counted apart, as missed while away;
and the RSS of each node (the survivor's growth from the end of the first minute).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import redis.asyncio as redis
from websockets.asyncio.client import ClientConnection, connect

from bench._common import (
    ServerNode,
    free_port,
    fresh_database,
    machine,
    rss_bytes,
    seed_room,
    server_env,
    write_section,
)
from tests.fakes.openrouter import Stream, serve_fake_openrouter

TITLE = "## Soak: faults under a live room (bench.soak)"
MEMBERS = 50
DEBUG = False
TOKENS = [f"s{i} " for i in range(40)]


# -- Redis of its own ----------------------------------------------------------------------


class OwnRedis:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self.process = subprocess.Popen(  # noqa: ASYNC220 - returns at once
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.workdir)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        try:
            for _ in range(200):
                with contextlib.suppress(redis.ConnectionError):
                    await client.ping()
                    return
                await asyncio.sleep(0.05)
            raise TimeoutError("redis-server did not start")
        finally:
            await client.aclose()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)


# -- A member -------------------------------------------------------------------------------


@dataclass
class StreamView:
    indexes: Counter[int] = field(default_factory=Counter)
    ends: int = 0
    resumed_from: list[int] = field(default_factory=list)
    log: list[tuple[str, int]] = field(default_factory=list)  # (connection, index), debug


@dataclass
class Totals:
    acked: dict[str, int] = field(default_factory=dict)  # message id -> seq
    asked: dict[str, str] = field(default_factory=dict)  # stream id -> question id
    answers: dict[str, str] = field(default_factory=dict)  # question id -> answer id
    deltas: dict[str, int] = field(default_factory=dict)  # stream id -> highest index + 1
    # (stream id, index) -> when the first member got it: about when it went out.
    first_seen: dict[tuple[str, int], float] = field(default_factory=dict)
    sent: int = 0
    send_failures: int = 0
    connects: int = 0
    connect_failures: int = 0
    not_recovered: int = 0


class Member:
    def __init__(self, n: int, token: str, session_id: str, totals: Totals) -> None:
        self.n = n
        self.token = token
        self.session_id = session_id
        self.totals = totals
        self.messages: set[str] = set()
        self.seqs: set[int] = set()
        self.duplicates = 0
        self.streams: dict[str, StreamView] = defaultdict(StreamView)
        self.ws: ClientConnection | None = None
        self.node: ServerNode | None = None
        self._ids = 0
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.connected = asyncio.Event()
        # (joined at, dropped at or None): when this member had a joined connection.
        self.online: list[tuple[float, float | None]] = []

    def was_online(self, at: float) -> bool:
        return any(start <= at and (end is None or at <= end) for start, end in self.online)

    def contiguous_seq(self) -> int:
        seq = 0
        while seq + 1 in self.seqs:
            seq += 1
        return seq

    async def run(self, nodes: list[ServerNode], stop: asyncio.Event) -> None:
        """Stay connected (to a random node) until ``stop``; reconnect on any loss."""
        while not stop.is_set():
            self.node = random.choice(nodes)
            try:
                await self._session(self.node, stop)
            except Exception:
                self.totals.connect_failures += 1
            self.connected.clear()
            for future in self._replies.values():
                if not future.done():
                    future.set_exception(ConnectionError("connection lost"))
            self._replies.clear()
            if not stop.is_set():
                await asyncio.sleep(random.uniform(0.1, 1.0))

    async def _session(self, node: ServerNode, stop: asyncio.Event) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with connect(node.ws_url, additional_headers=headers, open_timeout=10) as ws:
            self.ws = ws
            reader = asyncio.create_task(self._read(ws))
            try:
                # Online from the join on: what goes out before it, the join's streams
                # and resumes are for.
                self.online.append((time.monotonic(), None))
                await self._join(node)
                self.totals.connects += 1
                self.connected.set()
                await asyncio.wait(
                    [reader, asyncio.create_task(stop.wait())],
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                if self.online and self.online[-1][1] is None:
                    self.online[-1] = (self.online[-1][0], time.monotonic())
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
                self.ws = None

    async def _join(self, node: ServerNode) -> None:
        since = self.contiguous_seq()
        for _ in range(60):
            joined = await self.request({"type": "join", "session_id": self.session_id}, since)
            if joined["type"] == "joined":
                break
            if DEBUG:
                print(f"member {self.n} on {node.name}: {joined}")
            await asyncio.sleep(0.5)  # unavailable: Redis or the database coming back
        else:
            raise ConnectionError(f"join failed: {joined}")
        for message in joined.get("history", []):
            self._got(message, live=False)
        if joined.get("recovered") is False:
            self.totals.not_recovered += 1
            await self._page(node, since)
        for running in joined.get("streams", []):
            stream_id = running["stream_id"]
            view = self.streams[stream_id]
            if view.ends:
                continue
            wanted = 0
            while wanted in view.indexes:
                wanted += 1
            view.resumed_from.append(wanted)
            frame = {"type": "resume", "session_id": self.session_id, "stream_id": stream_id}
            await self.request({**frame, "offset": wanted})

    async def _page(self, node: ServerNode, after: int) -> None:
        async with httpx.AsyncClient(base_url=node.http_url, timeout=15) as http:
            while True:
                response = await http.get(
                    f"/v1/sessions/{self.session_id}/messages",
                    params={"after_seq": after, "limit": 200},
                    headers={"Authorization": f"Bearer {self.token}"},
                )
                page = response.json()["data"]["messages"]
                for message in page:
                    self._got(message, live=False)
                if len(page) < 200:
                    return
                after = page[-1]["seq"]

    async def request(self, frame: dict[str, Any], since: int | None = None) -> dict[str, Any]:
        assert self.ws is not None
        self._ids += 1
        frame_id = f"m{self.n}-{self._ids}"
        if since is not None:
            frame["since_seq"] = since
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[frame_id] = future
        await self.ws.send(orjson.dumps({**frame, "id": frame_id}).decode())
        try:
            return await asyncio.wait_for(future, 30)
        finally:
            self._replies.pop(frame_id, None)

    async def _read(self, ws: ClientConnection) -> None:
        seen_here: set[str] = set()
        async for raw in ws:
            frame = orjson.loads(raw)
            kind = frame.get("type")
            reply = self._replies.get(str(frame.get("id")))
            if reply is not None and not reply.done() and kind not in ("message",):
                # Live deltas that reach a new connection before its resume's ack count
                # like any other: the resume does not send them again (each index once
                # per connection, issue 14.11), so ignoring them counted them lost.
                reply.set_result(frame)
                continue
            if kind == "message":
                message = frame["message"]
                if message["id"] in seen_here:
                    self.duplicates += 1
                seen_here.add(message["id"])
                self._got(message, live=True)
            elif kind == "stream.delta":
                view = self.streams[frame["stream_id"]]
                view.indexes[frame["index"]] += 1
                self.totals.first_seen.setdefault(
                    (frame["stream_id"], frame["index"]), time.monotonic()
                )
                if DEBUG:
                    view.log.append((str(id(ws))[-4:], frame["index"]))
            elif kind == "stream.end":
                self.streams[frame["stream_id"]].ends += 1
                if frame.get("message"):
                    self._got(frame["message"], live=True)
                    self.totals.answers[frame["message"].get("reply_to") or ""] = frame["message"][
                        "id"
                    ]

    def _got(self, message: dict[str, Any], *, live: bool) -> None:
        self.messages.add(message["id"])
        self.seqs.add(int(message["seq"]))
        if message.get("role") == "assistant" and message.get("reply_to"):
            self.totals.answers[message["reply_to"]] = message["id"]


# -- The run ----------------------------------------------------------------------------------


@dataclass
class Report:
    minutes: float
    lost_messages: int
    duplicated_messages: int
    unended: int
    lost_deltas: int
    duplicated_deltas: int
    away_deltas: int
    acked: int
    answers: int
    connects: int
    connect_failures: int
    send_failures: int
    not_recovered: int
    rss: dict[str, tuple[int, int]]
    events: list[str]
    load: str


in_flight: set[asyncio.Task[None]] = set()


async def load(members: list[Member], session_id: str, stop: asyncio.Event, t: Totals) -> None:
    """A message every ~0.5 s, a question every ~3 s, from random connected members."""
    tick = 0
    while not stop.is_set():
        await asyncio.sleep(0.5)
        tick += 1
        ready = [m for m in members if m.connected.is_set()]
        if not ready:
            continue
        member = random.choice(ready)
        ask = tick % 6 == 0
        frame = {
            "type": "message",
            "session_id": session_id,
            "content": f"{'q' if ask else 'm'}{tick} from {member.n}",
            "reply": "auto" if ask else "none",
        }
        task = asyncio.create_task(send(member, frame, t))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)


async def send(member: Member, frame: dict[str, Any], t: Totals) -> None:
    t.sent += 1
    try:
        ack = await member.request(frame)
    except Exception:
        t.send_failures += 1
        return
    if ack.get("type") != "ack":
        t.send_failures += 1
        return
    t.acked[ack["message"]["id"]] = ack["message"]["seq"]
    if ack.get("stream_id"):
        t.asked[ack["stream_id"]] = ack["message"]["id"]


async def churn(members: list[Member], stop: asyncio.Event) -> None:
    """Every ~2 s a random member drops its connection (it reconnects by itself)."""
    while not stop.is_set():
        await asyncio.sleep(random.uniform(1.0, 3.0))
        member = random.choice(members)
        if member.ws is not None:
            with contextlib.suppress(Exception):
                await member.ws.close()


async def run(minutes: float, events: list[str], faults: bool = True) -> Report:
    workdir = Path(tempfile.mkdtemp(prefix="parley-soak-"))
    own_redis = OwnRedis(workdir)
    await own_redis.start()
    try:
        async with fresh_database("postgresql", workdir) as database_url:
            with serve_fake_openrouter() as fake:
                fake.default = Stream(TOKENS, delay_s=0.04, comments=False)
                return await soak(minutes, database_url, own_redis, fake, workdir, events, faults)
    finally:
        own_redis.kill()
        shutil.rmtree(workdir, ignore_errors=True)


async def soak(
    minutes: float,
    database_url: str,
    own_redis: OwnRedis,
    fake: Any,
    workdir: Path,
    events: list[str],
    faults: bool,
) -> Report:
    env = server_env(
        database_url,
        own_redis.url,
        OPENROUTER_API_KEY="sk-or-soak",
        OPENROUTER_BASE_URL=fake.base_url,
        PRESENCE_TTL_S="5",
        MESSAGES_PER_WINDOW="100000",
        LOGIN_ATTEMPTS_PER_WINDOW="100000",
    )
    nodes = [ServerNode(name, env, workdir) for name in ("a", "b")]
    for node in nodes:
        await node.start()
    room = await seed_room(database_url, MEMBERS)
    totals = Totals()
    members = [Member(i, tok, room.session_id, totals) for i, tok in enumerate(room.tokens)]
    stop = asyncio.Event()
    started = time.monotonic()

    def log(what: str) -> None:
        events.append(f"{time.monotonic() - started:6.1f} s  {what}")
        print(events[-1], flush=True)

    runners = [asyncio.create_task(m.run(nodes, stop)) for m in members]
    await asyncio.wait_for(asyncio.gather(*(m.connected.wait() for m in members)), 60)
    log(f"{MEMBERS} members joined")
    workers = [
        asyncio.create_task(load(members, room.session_id, stop, totals)),
        asyncio.create_task(churn(members, stop)),
    ]
    duration = minutes * 60
    rss_start: dict[str, int] = {}

    async def until(fraction: float) -> None:
        await asyncio.sleep(max(0.0, started + fraction * duration - time.monotonic()))
        fake.requests.clear()  # the fake keeps every request; this is a long run

    await until(min(0.1, 60 / duration))
    rss_start = {node.name: rss_bytes(node.pid) for node in nodes}
    log(f"RSS after warm-up: {rss_start}")
    rss_start["b (restarted)"] = rss_start["b"]
    if faults:
        await until(0.4)
        log("Redis: SIGKILL")
        own_redis.kill()
        await asyncio.sleep(2)
        await own_redis.start()
        log("Redis: back (empty)")
        await until(0.6)
        log("node b: SIGKILL")
        nodes[1].stop()
        await asyncio.sleep(2)
        await nodes[1].start()
        rss_start["b (restarted)"] = rss_bytes(nodes[1].pid)
        log("node b: back")
    await until(1.0)
    for worker in workers:
        worker.cancel()
    log("load stopped; settling")
    await settle(members, totals, 30)
    rss_end = {node.name: rss_bytes(node.pid) for node in nodes}
    rss_end["b (restarted)"] = rss_end["b"]
    stop.set()
    await asyncio.gather(*runners, return_exceptions=True)
    for node in nodes:
        node.stop()
    return tally(minutes, members, totals, rss_start, rss_end, events)


async def settle(members: list[Member], totals: Totals, timeout_s: float) -> None:
    """Wait (bounded) until every asked stream has ended somewhere and everyone is on."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        connected = all(m.connected.is_set() for m in members)
        answered = all(q in totals.answers for q in totals.asked.values())
        if connected and answered:
            await asyncio.sleep(3)  # the last frames in flight
            return
        await asyncio.sleep(0.5)


def tally(
    minutes: float,
    members: list[Member],
    t: Totals,
    rss_start: dict[str, int],
    rss_end: dict[str, int],
    events: list[str],
) -> Report:
    for m in members:
        for stream_id, view in m.streams.items():
            if view.indexes:
                t.deltas[stream_id] = max(t.deltas.get(stream_id, 0), max(view.indexes) + 1)
    expected = set(t.acked) | set(t.answers.values())
    lost = unended = lost_deltas = dup_deltas = away_deltas = 0
    seq_of = {**t.acked}
    for m in members:
        lost += len(expected - m.messages)
        missing = sorted(seq_of.get(i, -1) for i in expected - m.messages)
        if missing and DEBUG:
            print(
                f"member {m.n} ({m.node.name if m.node else '-'}):"
                f" missing seqs {missing[:20]} of {len(missing)}"
            )
        for stream_id, question in t.asked.items():
            seen = m.streams.get(stream_id)
            answer = t.answers.get(question)
            ended = (seen is not None and seen.ends >= 1) or (
                answer is not None and answer in m.messages
            )
            unended += not ended
            if seen is not None and seen.ends:
                view = seen
                n = t.deltas.get(stream_id, 0)
                for i in range(n):
                    if i in view.indexes:
                        continue
                    went_out = t.first_seen.get((stream_id, i))
                    if went_out is not None and not m.was_online(went_out):
                        away_deltas += 1  # it went out while this member was away
                    else:
                        lost_deltas += 1
                        if DEBUG:
                            print(f"member {m.n} stream {stream_id[:6]}: lost {i}")
                dup_deltas += sum(c - 1 for c in view.indexes.values() if c > 1)
                if DEBUG and any(c > 1 for c in view.indexes.values()):
                    print(f"member {m.n} stream {stream_id[:6]}: {view.resumed_from} {view.log}")
                dup_deltas += view.ends - 1  # a second end is a duplicate too
    return Report(
        minutes=minutes,
        lost_messages=lost,
        duplicated_messages=sum(m.duplicates for m in members),
        unended=unended,
        lost_deltas=lost_deltas,
        duplicated_deltas=dup_deltas,
        away_deltas=away_deltas,
        acked=len(t.acked),
        answers=len(t.asked),
        connects=t.connects,
        connect_failures=t.connect_failures,
        send_failures=t.send_failures,
        not_recovered=t.not_recovered,
        rss={k: (rss_start[k], rss_end[k]) for k in rss_start},
        events=events,
        load=loadavg(),
    )


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def growth(before: int, after: int) -> str:
    return (
        f"{before / 2**20:.0f} → {after / 2**20:.0f} MiB ({100 * (after - before) / before:+.1f} %)"
    )


def render(r: Report, revision: str) -> str:
    survivor = r.rss["a"]
    verdict = (
        "**met**"
        if r.lost_messages == r.unended == r.lost_deltas == r.duplicated_deltas == 0
        and (survivor[1] - survivor[0]) / survivor[0] < 0.10
        else "**not met**"
    )
    events = "\n".join(f"    {e}" for e in r.events)
    return f"""
Two `parley serve` nodes on PostgreSQL and their own `redis-server`, {MEMBERS} members
of one room (`websockets` clients, each on a random node, each dropping its connection
about every 100 s at random, a drop somewhere every ~2 s), a message every 0.5 s and a
question every 3 s (the loopback fake OpenRouter answers 40 deltas over ~1.6 s); Redis
SIGKILLed and restarted empty at 40 % of the run, node b SIGKILLed and restarted at
60 %. Run: `.venv/bin/python -m bench.soak --minutes {r.minutes:g}` at {revision}.
Machine: {machine()}; load average at the end {r.load} (other engineers' tests share it).

Target: zero lost or unended, RSS growth under 10 %: {verdict}.

Counted per member at the end (after 30 s to settle, no final re-join): a *lost message*
is an acknowledged message or stored answer the member never received (live, or in a
join's `history` with `since_seq`); an *unended stream* is an acknowledged question whose
answer's `stream.end` the member never got and whose stored answer it never received
either; *lost / duplicated deltas* are indexes missing or repeated in a stream whose end
the member saw (members resume running streams from the next index they want), except
those that went out while the member was between connections, counted on their own
row (they reach it in the stored answer; a resume that still ran brings them).

| what | count |
| --- | ---: |
| messages acknowledged / questions acknowledged | {r.acked} / {r.answers} |
| lost messages (member-deliveries) | {r.lost_messages} |
| messages delivered twice on one connection | {r.duplicated_messages} |
| unended streams (member-streams) | {r.unended} |
| lost deltas / duplicated deltas | {r.lost_deltas} / {r.duplicated_deltas} |
| deltas missed while between connections (not lost) | {r.away_deltas} |
| sends not acknowledged (node or Redis down) | {r.send_failures} |
| (re)connects / failed attempts | {r.connects} / {r.connect_failures} |
| joins answered `recovered: false` (paged over REST) | {r.not_recovered} |
| RSS node a (warm-up → end) | {growth(*r.rss["a"])} |
| RSS node b (after its restart → end) | {growth(*r.rss["b (restarted)"])} |

What happened when:

{events}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--no-report", action="store_true", help="print, don't write docs")
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--no-faults", action="store_true", help="the load alone")
    parser.add_argument("--debug", action="store_true", help="list what each member missed")
    args = parser.parse_args()
    random.seed(args.seed)
    global DEBUG
    DEBUG = args.debug
    events: list[str] = []
    report = asyncio.run(run(args.minutes, events, not args.no_faults))
    revision = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    body = render(report, revision)
    print(body)
    if not args.no_report:
        write_section(TITLE, body)


if __name__ == "__main__":
    main()
