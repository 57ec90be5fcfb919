"""``parley chat``: a terminal client for one session.

Lines typed on stdin are sent as messages; the assistant's answer is written to stdout
as its deltas arrive; other people's messages are printed with their name. Notices
(presence, stages, reconnects, errors) go to stderr so that stdout stays the
conversation. Ctrl-C during an answer sends ``cancel``; a second Ctrl-C, a Ctrl-C
while idle, or EOF quits (EOF first waits for the answers still owed, so
``echo hi | parley chat --new demo`` prints the whole reply).

Commands: ``/retry`` or ``/regenerate`` asks for a new answer to the last question
(the retry of a failed one), ``/edit <text>`` changes your last question and asks
again. A command waits for the answers still owed, so that it applies to the newest.

The socket reconnects on its own with jittered exponential backoff and picks up
where it was: ``join`` with ``since_seq`` of the last message shown, ``resume`` of a
running stream from the next index. Messages not yet acknowledged are sent again
with the same ``client_msg_id``, which the server stores only once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import random
import signal
import sys
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from errors import (
    BadRequest,
    Forbidden,
    InternalError,
    ParleyError,
    Unauthorized,
)
from realtime.close_codes import DO_NOT_RECONNECT, CloseCode
from server.cli.chat_rest import Rest

BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 15.0
EOF_DRAIN_TIMEOUT_S = 300.0


# State of the conversation ---------------------------------------------------------------


@dataclass
class Stream:
    next_index: int = 0
    started: bool = False
    text: str = ""  # what is on screen of it


@dataclass
class Conversation:
    session_id: str
    me: str
    reply: str
    names: dict[str, str] = field(default_factory=dict)
    last_seq: int = 0
    shown: set[str] = field(default_factory=set)
    streams: dict[str, Stream] = field(default_factory=dict)
    ended: set[str] = field(default_factory=set)
    # client_msg_id → content, until the server acknowledges it.
    unacked: dict[str, str] = field(default_factory=dict)
    owed: set[str] = field(default_factory=set)  # streams answering our own messages
    last_answer: str | None = None  # what /retry and /regenerate answer again
    last_question: str | None = None  # our own, what /edit changes
    versions: dict[str, int] = field(default_factory=dict)  # message id → version shown
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def idle(self) -> bool:
        return not self.unacked and not self.owed


class Terminal:
    def __init__(self, out: TextIO, err: TextIO) -> None:
        self.out, self.err = out, err
        self.mid_line = False

    def write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()
        self.mid_line = not text.endswith("\n") if text else self.mid_line

    def line(self, text: str) -> None:
        self.write(("\n" if self.mid_line else "") + text + "\n")

    def notice(self, text: str) -> None:
        if self.mid_line:
            self.write("\n")
        self.err.write(f"* {text}\n")
        self.err.flush()


# The client ------------------------------------------------------------------------------


class ChatClient:
    def __init__(self, rest: Rest, ws_url: str, conv: Conversation, term: Terminal) -> None:
        self.rest, self.ws_url, self.conv, self.term = rest, ws_url, conv, term
        self.ws: ClientConnection | None = None
        self.quit = asyncio.Event()
        self.cancel_sent = False
        self.attempt = 0
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Any) -> None:
        """Runs a send in the background, keeping a reference until it is done."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # Connection ----------------------------------------------------------------------

    async def run(self) -> None:
        while not self.quit.is_set():
            try:
                headers = {"Authorization": f"Bearer {self.rest.token}"}
                async with connect(self.ws_url, additional_headers=headers) as ws:
                    self.ws = ws
                    await self._session(ws)
            except InvalidStatus as exc:
                if exc.response.status_code == 401 and await self._refresh():
                    continue
                if exc.response.status_code in (401, 403):
                    raise Unauthorized("the server refused the credentials") from exc
                self.term.notice(f"handshake refused (HTTP {exc.response.status_code})")
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else None
                if code in DO_NOT_RECONNECT:
                    raise Forbidden(f"the server closed the connection ({code})") from exc
                if code == CloseCode.TOKEN_EXPIRED and await self._refresh():
                    continue
                if not self.quit.is_set():
                    self.term.notice(f"connection lost ({code or 'no close frame'})")
            except (OSError, WebSocketException, TimeoutError) as exc:
                self.term.notice(f"cannot connect: {exc}")
            finally:
                self.ws = None
            if not self.quit.is_set():
                await self._backoff()

    async def _refresh(self) -> bool:
        try:
            return await self.rest.refresh()
        except ParleyError:
            return False

    async def _backoff(self) -> None:
        ceiling = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**self.attempt)
        self.attempt += 1
        delay = random.uniform(ceiling / 2, ceiling)  # jitter: not every client at once
        self.term.notice(f"reconnecting in {delay:.1f}s")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.quit.wait(), delay)

    async def _session(self, ws: ClientConnection) -> None:
        welcome = orjson.loads(await ws.recv())
        if welcome.get("type") != "welcome":
            raise InternalError("the server did not start with welcome")
        self.attempt = 0
        await self._load_names()
        await self.send(
            {
                "type": "join",
                "session_id": self.conv.session_id,
                "since_seq": self.conv.last_seq,
                "id": "join",
            }
        )
        async for raw in ws:
            frame = orjson.loads(raw)
            if self._names_unknown(frame):
                # Someone added since we looked (or posting over REST, with no presence).
                await self._load_names()
            self.handle(frame)

    def _names_unknown(self, frame: dict[str, Any]) -> bool:
        messages = [frame["message"]] if frame.get("type") == "message" else []
        if frame.get("type") == "joined":
            messages = frame.get("history", [])
        return any(
            m.get("role") == "user" and m.get("user_id") not in self.conv.names for m in messages
        )

    async def _load_names(self) -> None:
        """Members' names, so that history and messages name their authors."""
        with contextlib.suppress(ParleyError):
            detail = await self.rest.call("GET", f"/v1/sessions/{self.conv.session_id}")
            for member in detail.get("members", []):
                self.conv.names[member["user_id"]] = member["name"]

    async def send(self, frame: dict[str, Any]) -> bool:
        if self.ws is None:
            return False
        try:
            await self.ws.send(orjson.dumps(frame).decode())
        except ConnectionClosed:
            return False
        return True

    async def post(self, content: str) -> None:
        client_msg_id = uuid.uuid4().hex
        self.conv.unacked[client_msg_id] = content
        await self._send_message(client_msg_id, content)

    async def _send_message(self, client_msg_id: str, content: str) -> None:
        await self.send(
            {
                "type": "message",
                "session_id": self.conv.session_id,
                "content": content,
                "client_msg_id": client_msg_id,
                "reply": self.conv.reply,
                "id": f"m:{client_msg_id}",
            }
        )

    async def command(self, line: str) -> None:
        """``/retry``, ``/regenerate``, ``/edit <text>``."""
        name, _, rest = line.strip().partition(" ")
        conv = self.conv
        if name in ("/retry", "/regenerate"):
            if conv.last_answer is None:
                self.term.notice("no answer to regenerate yet")
                return
            frame = {"type": "regenerate", "message_id": conv.last_answer}
        elif name == "/edit":
            if conv.last_question is None or not rest.strip():
                self.term.notice("usage: /edit <new text> (changes your last question)")
                return
            frame = {"type": "edit", "message_id": conv.last_question, "content": rest.strip()}
        else:
            self.term.notice("commands: /retry, /regenerate, /edit <text>")
            return
        request_id = uuid.uuid4().hex
        conv.unacked[f"v:{request_id}"] = line
        frame |= {"session_id": conv.session_id, "id": f"v:{request_id}"}
        if not await self.send(frame):
            conv.unacked.pop(f"v:{request_id}", None)
            self.term.notice("not connected; try again")

    async def cancel_running(self) -> bool:
        running = [s for s in self.conv.streams if s not in self.conv.ended]
        for stream_id in running:
            await self.send(
                {
                    "type": "cancel",
                    "session_id": self.conv.session_id,
                    "stream_id": stream_id,
                    "id": f"c:{stream_id}",
                }
            )
        return bool(running)

    # Frames ----------------------------------------------------------------------------

    def handle(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "joined":
            self._joined(frame)
        elif kind == "ack" and str(frame.get("id", "")).startswith("m:"):
            self.conv.unacked.pop(frame["id"][2:], None)
            stream_id = frame.get("stream_id")
            if stream_id and stream_id not in self.conv.ended:
                self.conv.owed.add(stream_id)
            if frame.get("message"):
                self._message(frame["message"])
        elif kind == "ack" and str(frame.get("id", "")).startswith("v:"):
            self.conv.unacked.pop(frame["id"], None)
            stream_id = frame.get("stream_id")
            if stream_id and stream_id not in self.conv.ended:
                self.conv.owed.add(stream_id)
        elif kind == "message":
            self._message(frame["message"])
        elif kind == "message.version":
            self._version(frame["message"])
        elif kind == "presence":
            self.conv.names[frame["user_id"]] = frame["name"]
            if frame["user_id"] != self.conv.me:
                verb = "joined" if frame["state"] == "join" else "left"
                self.term.notice(f"{frame['name']} {verb}")
        elif kind == "member":
            if frame.get("name"):
                self.conv.names[frame["user_id"]] = frame["name"]
            if frame["user_id"] != self.conv.me:
                verb = "joined" if frame["change"] == "added" else "left"
                self.term.notice(f"{frame.get('name') or 'someone'} {verb} the session")
        elif kind == "stream.start":
            self._stream(frame["stream_id"])
        elif kind == "stream.status":
            self.term.notice(f"assistant: {frame['stage']}…")
        elif kind == "stream.delta":
            self._delta(frame)
        elif kind == "stream.end":
            self._end(frame)
        elif kind == "error":
            self._error(frame)
        elif kind == "left" and frame.get("reason") == "removed":
            self.term.notice("you were removed from this session")
            self.quit.set()
        self.conv.changed.set()

    def _joined(self, frame: dict[str, Any]) -> None:
        for member in frame.get("members", []):
            self.conv.names[member["user_id"]] = member["name"]
        for message in frame.get("history", []):
            self._message(message, earlier=True)
        if frame.get("recovered") is False:
            self.term.notice("some older messages were missed; see the web page for them")
        running = [s["stream_id"] for s in frame.get("streams", [])]
        for stream_id in {*running, *(s for s in self.conv.streams if s not in self.conv.ended)}:
            stream = self._stream(stream_id)
            if stream is not None:
                self.spawn(
                    self.send(
                        {
                            "type": "resume",
                            "session_id": self.conv.session_id,
                            "stream_id": stream_id,
                            "offset": stream.next_index,
                            "id": f"r:{stream_id}",
                        }
                    )
                )
        for client_msg_id, content in list(self.conv.unacked.items()):
            self.spawn(self._send_message(client_msg_id, content))

    def _message(self, message: dict[str, Any], *, earlier: bool = False) -> None:
        """Prints a message not yet on screen.

        Live, only other people's messages: ours were typed here and answers stream.
        ``earlier`` ones (the history on opening a session, or what came while the
        socket was down) are printed whoever wrote them.
        """
        if message["id"] in self.conv.shown:
            return
        self.conv.shown.add(message["id"])
        self.conv.last_seq = max(self.conv.last_seq, message["seq"])
        mine = message.get("user_id") == self.conv.me
        self._remember(message)
        if message["role"] == "user" and (earlier or not mine):
            name = "you" if mine else self.conv.names.get(message.get("user_id") or "", "someone")
            self.term.line(f"[{name}] {message['content']}")
        elif message["role"] == "assistant" and earlier:
            self._earlier_answer(message["content"])

    def _remember(self, message: dict[str, Any]) -> None:
        self.conv.versions[message["id"]] = message.get("version") or 1
        if message["role"] == "assistant":
            self.conv.last_answer = message["id"]
        elif message.get("user_id") == self.conv.me:
            self.conv.last_question = message["id"]

    def _version(self, message: dict[str, Any]) -> None:
        """Another version of a message is shown (regenerated, edited, switched)."""
        if self.conv.versions.get(message["id"]) == message.get("version"):
            return  # printed already, as its answer streamed
        self.conv.versions[message["id"]] = message.get("version") or 1
        label = f"version {message.get('version')}/{message.get('version_count')}"
        if message["role"] == "assistant":
            if message.get("status") == "error" and not message.get("content"):
                self.term.line(f"assistant ({label})> [failed]")
            else:
                self.term.line(f"assistant ({label})> {message['content']}")
        else:
            mine = message.get("user_id") == self.conv.me
            name = "you" if mine else self.conv.names.get(message.get("user_id") or "", "someone")
            self.term.line(f"[{name}, {label}] {message['content']}")

    def _earlier_answer(self, content: str) -> None:
        # An answer we were showing when the socket went, finished while we were away:
        # print the rest of it, not all of it again.
        for stream_id, stream in self.conv.streams.items():
            if stream_id not in self.conv.ended and stream.text and content.startswith(stream.text):
                self.term.write(content[len(stream.text) :] + "\n")
                self.conv.ended.add(stream_id)
                self.conv.owed.discard(stream_id)
                return
        self.term.line(f"assistant> {content}")

    def _stream(self, stream_id: str) -> Stream | None:
        if stream_id in self.conv.ended:
            return None
        return self.conv.streams.setdefault(stream_id, Stream())

    def _delta(self, frame: dict[str, Any]) -> None:
        stream = self._stream(frame["stream_id"])
        # In order and once: a repeated index (after a resume) is already on screen.
        if stream is None or frame["index"] != stream.next_index:
            return
        if not stream.started:
            stream.started = True
            self.term.write(("\n" if self.term.mid_line else "") + "assistant> ")
        self.term.write(frame["text"])
        stream.text += frame["text"]
        stream.next_index += 1

    def _end(self, frame: dict[str, Any]) -> None:
        stream_id = frame["stream_id"]
        stream = self._stream(stream_id)
        if stream is None:
            return
        message = frame.get("message")
        if message is not None:
            self.conv.shown.add(message["id"])
            self.conv.last_seq = max(self.conv.last_seq, message["seq"])
            self._remember(message)
            if not stream.started and message.get("content"):
                # Joined too late for the deltas: the stored text is the answer.
                self.term.write("assistant> " + message["content"])
        reason = frame.get("finish_reason")
        suffix = {"cancelled": " [stopped]", "length": " [cut short]"}.get(reason or "", "")
        text = suffix if self.term.mid_line else suffix.strip()
        if self.term.mid_line or text:
            self.term.write(text + "\n")
        if reason == "error":
            self.term.notice(f"assistant failed: {(frame.get('error') or {}).get('message')}")
        self.conv.ended.add(stream_id)
        self.conv.owed.discard(stream_id)
        self.cancel_sent = False

    def _error(self, frame: dict[str, Any]) -> None:
        frame_id = str(frame.get("id", ""))
        if frame_id.startswith("r:"):
            # Ended and no longer held: its message is in the history we replayed.
            self.conv.ended.add(frame_id[2:])
            self.conv.owed.discard(frame_id[2:])
            return
        if frame_id.startswith("m:"):
            self.conv.unacked.pop(frame_id[2:], None)
        elif frame_id.startswith("v:"):
            self.conv.unacked.pop(frame_id, None)
        self.term.notice(f"error: {frame.get('code')}: {frame.get('message')}")
        if frame_id == "join":
            self.quit.set()

    # Ctrl-C ----------------------------------------------------------------------------

    def interrupt(self) -> None:
        if self.cancel_sent or not any(s not in self.conv.ended for s in self.conv.streams):
            self.quit.set()
            return
        self.cancel_sent = True
        self.term.notice("stopping the answer (Ctrl-C again to quit)")
        self.spawn(self.cancel_running())


# Input, session choice and the entry points -----------------------------------------------


def start_stdin_reader(loop: asyncio.AbstractEventLoop, stdin: TextIO) -> asyncio.Queue[str | None]:
    """Lines from stdin in a queue, None at EOF. A thread, because add_reader does not
    work for every kind of stdin (regular files, Windows consoles)."""
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def read() -> None:
        for line in stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line.rstrip("\n"))
        loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=read, name="parley-stdin", daemon=True).start()
    return lines


async def choose_session(
    rest: Rest, args: argparse.Namespace, lines: asyncio.Queue[str | None], term: Terminal
) -> str:
    if args.session:
        await rest.call("GET", f"/v1/sessions/{args.session}")
        return str(args.session)
    if args.new is not None:
        created = await rest.call("POST", "/v1/sessions", {"title": args.new})
        term.notice(f"created session {created['id']}")
        return str(created["id"])
    sessions = (await rest.call("GET", "/v1/sessions"))["sessions"]
    if not sessions:
        created = await rest.call("POST", "/v1/sessions", {"title": "Terminal chat"})
        term.notice(f"no sessions yet: created {created['id']}")
        return str(created["id"])
    for number, session in enumerate(sessions, 1):
        term.err.write(f"{number:3}. {session['title'] or '(untitled)'}  [{session['id']}]\n")
    while True:
        term.err.write("session number: ")
        term.err.flush()
        answer = await lines.get()
        if answer is None:
            raise BadRequest("no session chosen")
        if answer.strip().isdigit() and 1 <= int(answer) <= len(sessions):
            return str(sessions[int(answer) - 1]["id"])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="parley chat", description="Chat in a Parley session.")
    parser.add_argument("--url", default=os.environ.get("PARLEY_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--email", default=os.environ.get("PARLEY_EMAIL"))
    parser.add_argument("--password", default=os.environ.get("PARLEY_PASSWORD"))
    parser.add_argument(
        "--token",
        default=os.environ.get("PARLEY_TOKEN"),
        help="an access JWT (instead of --email/--password)",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--session", help="the id of the session to join")
    which.add_argument("--new", metavar="TITLE", help="create a session with this title")
    parser.add_argument(
        "--no-reply",
        action="store_true",
        help="send messages without asking the assistant to answer",
    )
    args = parser.parse_args(argv)
    if not args.token and not args.email:
        parser.error("give --email (or PARLEY_EMAIL), or --token (or PARLEY_TOKEN)")
    if not args.token and not args.password:
        if not sys.stdin.isatty():
            # stdin carries the messages; the password would be read from it.
            parser.error("no terminal to ask the password on: give --password or PARLEY_PASSWORD")
        args.password = getpass.getpass(f"Password for {args.email}: ")
    return args


async def run_chat(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    term = Terminal(sys.stdout, sys.stderr)
    loop = asyncio.get_running_loop()
    rest = Rest(args.url.rstrip("/"))
    try:
        if args.token:
            rest.token = args.token
            me = await rest.call("GET", "/v1/me")
        else:
            me = await rest.login(args.email, args.password)
        lines = start_stdin_reader(loop, sys.stdin)
        session_id = await choose_session(rest, args, lines, term)
        conv = Conversation(session_id, str(me["id"]), "none" if args.no_reply else "auto")
        conv.names[conv.me] = me["name"]
        ws_url = "ws" + args.url.rstrip("/").removeprefix("http") + "/v1/ws"
        client = ChatClient(rest, ws_url, conv, term)
        term.notice(f"signed in as {me['name']}; type a message, Ctrl-D to quit")
        with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows
            loop.add_signal_handler(signal.SIGINT, client.interrupt)
        connection = asyncio.create_task(client.run())
        typing = asyncio.create_task(_pump_input(client, lines))
        quitting = asyncio.create_task(client.quit.wait())
        done, _ = await asyncio.wait(
            {connection, typing, quitting}, return_when=asyncio.FIRST_COMPLETED
        )
        for task in (connection, typing, quitting):
            task.cancel()
        await asyncio.gather(connection, typing, quitting, return_exceptions=True)
        if connection in done and not connection.cancelled() and connection.exception():
            raise connection.exception()  # type: ignore[misc]
        return 0
    except ParleyError as exc:
        term.notice(f"{exc.code}: {exc.message}")
        return 1
    finally:
        with contextlib.suppress(NotImplementedError):
            loop.remove_signal_handler(signal.SIGINT)
        await rest.aclose()


async def _pump_input(client: ChatClient, lines: asyncio.Queue[str | None]) -> None:
    while (line := await lines.get()) is not None:
        if line.startswith("/"):
            await _until_idle(client)
            await client.command(line)
        elif line.strip():
            await client.post(line)
    # EOF: leave once the messages are acknowledged and their answers are complete.
    await _until_idle(client)
    client.quit.set()


async def _until_idle(client: ChatClient) -> None:
    """Until every message is acknowledged and every answer owed is complete."""
    client.conv.changed.clear()
    async with asyncio.timeout(EOF_DRAIN_TIMEOUT_S):
        while not client.conv.idle:
            await client.conv.changed.wait()
            client.conv.changed.clear()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return asyncio.run(run_chat(argv))
    except KeyboardInterrupt:  # Ctrl-C before the handler was installed
        return 130


if __name__ == "__main__":
    sys.exit(main())
