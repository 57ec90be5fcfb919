"""``parley chat`` end to end: a real subprocess against a real server on loopback."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import signal
import subprocess
import sys
import termios
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from server.app import create_app
from tests.browser.conftest import PageServer, free_port
from tests.conftest import LiveServer, TestUser, create_session, make_settings, register_user

READ_TIMEOUT_S = 20


@pytest.fixture
def token_delay_s() -> float:
    return 0.0


@pytest.fixture
async def server(tmp_path: Path, token_delay_s: float) -> AsyncIterator[LiveServer]:
    settings = make_settings(
        f"sqlite+aiosqlite:///{tmp_path / 'parley.db'}", offline_token_delay_s=token_delay_s
    )
    live = LiveServer(create_app(settings))
    await live.start()
    try:
        yield live
    finally:
        await live.stop()


@pytest.fixture
async def http(server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        yield client


# The installed console script, as a user runs it; the module when not installed.
PARLEY = Path(sys.executable).with_name("parley")
COMMAND = [str(PARLEY), "chat"] if PARLEY.exists() else [sys.executable, "-m", "server.cli.chat"]


async def start_chat(server: LiveServer, user: TestUser, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *COMMAND, "--url", server.http_url, "--token", user.access_token, *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def read_until(stream: asyncio.StreamReader, needle: str) -> str:
    seen = ""
    async with asyncio.timeout(READ_TIMEOUT_S):
        while needle not in seen:
            chunk = await stream.read(256)
            if not chunk:
                raise AssertionError(f"stream ended before {needle!r}; got {seen!r}")
            seen += chunk.decode()
    return seen


async def stored_answer(http: httpx.AsyncClient, user: TestUser, session_id: str) -> dict:
    page = await http.get(f"/v1/sessions/{session_id}/messages", headers=user.headers)
    return next(m for m in page.json()["data"]["messages"] if m["role"] == "assistant")


async def test_a_line_on_stdin_gets_its_streamed_answer_on_stdout_and_eof_quits(
    server: LiveServer, http: httpx.AsyncClient
) -> None:
    ada = await register_user(http, "Ada")
    session_id = await create_session(http, ada, title="terminal")
    chat = await start_chat(server, ada, "--session", session_id)
    assert chat.stdin is not None

    chat.stdin.write(b"hello from the terminal\n")
    chat.stdin.close()
    stdout, stderr = await asyncio.wait_for(chat.communicate(), READ_TIMEOUT_S)

    assert chat.returncode == 0, stderr.decode()
    answer = await stored_answer(http, ada, session_id)
    assert "hello from the terminal" in answer["content"]
    assert stdout.decode() == f"assistant> {answer['content']}\n"


async def test_new_creates_a_session_and_no_reply_asks_for_no_answer(
    server: LiveServer, http: httpx.AsyncClient
) -> None:
    ada = await register_user(http, "Ada")
    chat = await start_chat(server, ada, "--new", "quiet room", "--no-reply")

    stdout, stderr = await asyncio.wait_for(chat.communicate(b"just a note\n"), READ_TIMEOUT_S)

    assert chat.returncode == 0, stderr.decode()
    assert stdout == b""
    sessions = (await http.get("/v1/sessions", headers=ada.headers)).json()["data"]["sessions"]
    assert [s["title"] for s in sessions] == ["quiet room"]
    page = await http.get(f"/v1/sessions/{sessions[0]['id']}/messages", headers=ada.headers)
    assert [m["content"] for m in page.json()["data"]["messages"]] == ["just a note"]


async def test_messages_from_others_are_printed_with_their_name(
    server: LiveServer, http: httpx.AsyncClient
) -> None:
    ada = await register_user(http, "Ada")
    bob = await register_user(http, "Bob")
    session_id = await create_session(http, ada, title="pair")
    # By id: adding by email is an invitation Bob would have to accept first.
    await http.post(
        f"/v1/sessions/{session_id}/members", json={"user_id": bob.id}, headers=ada.headers
    )
    chat = await start_chat(server, ada, "--session", session_id)
    assert chat.stdin is not None and chat.stdout is not None
    # Once Ada's own answer is printed she is surely in the room.
    chat.stdin.write(b"ready\n")
    await read_until(chat.stdout, "real model.\n")

    await http.post(
        f"/v1/sessions/{session_id}/messages",
        json={"content": "hi Ada", "reply": "none"},
        headers=bob.headers,
    )

    assert "[Bob] hi Ada\n" in await read_until(chat.stdout, "hi Ada\n")
    chat.stdin.close()
    await asyncio.wait_for(chat.wait(), READ_TIMEOUT_S)
    assert chat.returncode == 0


@pytest.mark.parametrize("token_delay_s", [0.2])
async def test_ctrl_c_stops_the_answer_and_a_second_ctrl_c_quits(
    server: LiveServer, http: httpx.AsyncClient
) -> None:
    ada = await register_user(http, "Ada")
    session_id = await create_session(http, ada, title="long")
    chat = await start_chat(server, ada, "--session", session_id)
    assert chat.stdin is not None and chat.stdout is not None
    chat.stdin.write(b"tell me everything\n")
    await read_until(chat.stdout, "assistant> I'm Parley's")

    chat.send_signal(signal.SIGINT)
    assert "[stopped]" in await read_until(chat.stdout, "[stopped]\n")
    chat.send_signal(signal.SIGINT)

    await asyncio.wait_for(chat.wait(), READ_TIMEOUT_S)
    assert chat.returncode == 0
    answer = await stored_answer(http, ada, session_id)
    assert answer["status"] == "cancelled"


async def test_after_a_server_restart_it_reconnects_and_nothing_is_printed_twice(
    tmp_path: Path,
) -> None:
    settings = make_settings(f"sqlite+aiosqlite:///{tmp_path / 'parley.db'}")
    server = PageServer(settings, free_port())
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            ada = await register_user(http, "Ada")
            session_id = await create_session(http, ada, title="restarts")
        chat = await start_chat(server, ada, "--session", session_id)
        assert chat.stdin is not None and chat.stdout is not None
        chat.stdin.write(b"before\n")
        first = await read_until(chat.stdout, "real model.\n")

        await server.stop()
        await server.restart_on_same_port()
        chat.stdin.write(b"after\n")
        chat.stdin.close()
        rest, stderr = await asyncio.wait_for(chat.communicate(), READ_TIMEOUT_S)

        assert chat.returncode == 0, stderr.decode()
        assert "reconnecting" in stderr.decode()
        printed = first + rest.decode()
        assert printed.count("assistant> ") == 2
        assert 'You said: "before"' in printed and 'You said: "after"' in printed
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            page = await http.get(f"/v1/sessions/{session_id}/messages", headers=ada.headers)
        roles = [m["role"] for m in page.json()["data"]["messages"]]
        assert roles == ["user", "assistant", "user", "assistant"]
    finally:
        await server.stop()


def _spawn_on_a_terminal(*args: str) -> tuple[subprocess.Popen[bytes], int]:
    """``parley chat`` with a pseudo-terminal as its stdin, stdout and controlling tty."""
    leader, follower = pty.openpty()

    def take_terminal() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    process = subprocess.Popen(
        [*COMMAND, *args],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        preexec_fn=take_terminal,
    )
    os.close(follower)
    return process, leader


async def read_terminal(leader: int, needle: str, seen: list[str]) -> str:
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(READ_TIMEOUT_S):
        while needle not in "".join(seen):
            seen.append((await loop.run_in_executor(None, os.read, leader, 1024)).decode())
    return "".join(seen)


async def test_email_without_password_asks_for_it_and_reopening_shows_the_history(
    server: LiveServer, http: httpx.AsyncClient
) -> None:
    ada = await register_user(http, "Ada")
    session_id = await create_session(http, ada, title="earlier")
    posted = await http.post(
        f"/v1/sessions/{session_id}/messages",
        json={"content": "what we said before"},
        headers={**ada.headers, "Accept": "text/event-stream"},
    )
    assert posted.is_success
    answer = await stored_answer(http, ada, session_id)

    process, leader = _spawn_on_a_terminal(
        "--url", server.http_url, "--email", ada.email, "--session", session_id
    )
    seen: list[str] = []
    try:
        await read_terminal(leader, "Password for", seen)
        os.write(leader, f"{ada.password}\n".encode())
        screen = await read_terminal(leader, answer["content"][-20:], seen)
        assert ada.password not in screen  # not echoed
        assert "[you] what we said before" in screen
        assert f"assistant> {answer['content']}" in screen.replace("\r\n", "\n")
    finally:
        process.send_signal(signal.SIGINT)
        await asyncio.get_running_loop().run_in_executor(None, process.wait, READ_TIMEOUT_S)
        os.close(leader)


async def test_a_member_added_while_chatting_is_printed_with_their_name(
    server: LiveServer, http: httpx.AsyncClient
) -> None:
    ada = await register_user(http, "Ada")
    cyd = await register_user(http, "Cyd")
    session_id = await create_session(http, ada, title="growing")
    chat = await start_chat(server, ada, "--session", session_id)
    assert chat.stdin is not None and chat.stdout is not None
    chat.stdin.write(b"ready\n")
    await read_until(chat.stdout, "real model.\n")

    added = await http.post(
        f"/v1/sessions/{session_id}/members", json={"user_id": cyd.id}, headers=ada.headers
    )
    assert added.status_code == 201, added.text
    await http.post(
        f"/v1/sessions/{session_id}/messages",
        json={"content": "hello, new here", "reply": "none"},
        headers=cyd.headers,
    )

    assert "[Cyd] hello, new here\n" in await read_until(chat.stdout, "new here\n")
    chat.stdin.close()
    await asyncio.wait_for(chat.wait(), READ_TIMEOUT_S)
    assert chat.stderr is not None
    assert "* Cyd joined the session\n" in (await chat.stderr.read()).decode()


async def test_regenerate_and_edit_from_the_terminal(
    server: LiveServer, http: httpx.AsyncClient
) -> None:
    ada = await register_user(http, "Ada")
    session_id = await create_session(http, ada, title="versions")
    chat = await start_chat(server, ada, "--session", session_id)

    lines = b"the first question\n/regenerate\n/edit the second question\n/retry\n"
    stdout, stderr = await asyncio.wait_for(chat.communicate(lines), READ_TIMEOUT_S * 2)

    assert chat.returncode == 0, stderr.decode()
    page = await http.get(f"/v1/sessions/{session_id}/messages", headers=ada.headers)
    question, answer = page.json()["data"]["messages"]
    assert (question["content"], question["version"], question["version_count"]) == (
        "the second question",
        2,
        2,
    )
    assert (answer["version"], answer["version_count"]) == (4, 4)
    assert "the second question" in answer["content"]
    versions = await http.get(
        f"/v1/sessions/{session_id}/messages/{answer['id']}/versions", headers=ada.headers
    )
    texts = [v["content"] for v in versions.json()["data"]["versions"]]
    assert "the first question" in texts[0] and "the first question" in texts[1]
    assert "the second question" in texts[2]
    printed = stdout.decode()
    # Four answers streamed, and the edit confirmed.
    assert printed.count("assistant> ") == 4, printed
    assert "[you, version 2/2] the second question\n" in printed
