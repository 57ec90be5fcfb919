"""Abuse through connections and frames: cancelling another room's answer, a quota
every way in, rate limits on every frame type, a byte-bounded outbox, paged replays
and caps on connections (docs/security.md, "Connections and frames")."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from pathlib import Path

import httpx
import orjson
import pytest
from websockets.exceptions import InvalidStatus

from tests.conftest import TEST_JWT_SECRET, create_session
from tests.ws.rawws import RawWebSocket
from tests.ws.test_limits import eventually, pair, serve
from tests.wsclient import WSClient


async def test_cancel_with_own_session_and_another_rooms_stream_is_not_found(
    database_url: str,
) -> None:
    # Slow enough that the answer is still running when the cancel arrives.
    async with serve(database_url, offline_token_delay_s=0.2) as server:
        ada, bob, ada_session = await pair(server)
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            mallory_session = await create_session(http, bob, title="mallory's own")
        ada_ws, _ = await WSClient.connect(server.ws_url, ada.access_token)
        bob_ws, _ = await WSClient.connect(server.ws_url, bob.access_token)
        try:
            await ada_ws.request({"type": "join", "session_id": ada_session})
            ack = await ada_ws.request(
                {"type": "message", "session_id": ada_session, "content": "a long one"}
            )
            await ada_ws.next("stream.delta")

            # Bob names his own session and Ada's stream.
            reply = await bob_ws.request(
                {"type": "cancel", "session_id": mallory_session, "stream_id": ack["stream_id"]}
            )
            assert reply["type"] == "error"
            assert reply["code"] == "not_found"
            # Ada's answer runs on: further deltas, then an end that is not cancelled.
            await ada_ws.next("stream.delta")
            end = await ada_ws.next("stream.end", timeout=30)
            assert end["finish_reason"] == "stop"
        finally:
            await ada_ws.close()
            await bob_ws.close()


# One message quota every way in ---------------------------------------------------------


async def test_rest_posts_plain_and_streamed_share_the_websocket_message_quota(
    database_url: str,
) -> None:
    async with serve(database_url, messages_per_window=3, message_window_s=60) as server:
        ada, _, session_id = await pair(server)
        url = f"/v1/sessions/{session_id}/messages"
        ws, _ = await WSClient.connect(server.ws_url, ada.access_token)
        try:
            await ws.request({"type": "join", "session_id": session_id})
            ack = await ws.request(
                {"type": "message", "session_id": session_id, "content": "ws", "reply": "none"}
            )
            assert ack["type"] == "ack"
            async with httpx.AsyncClient(base_url=server.http_url) as http:
                plain = await http.post(
                    url, json={"content": "rest", "reply": "none"}, headers=ada.headers
                )
                assert plain.status_code == 201, plain.text
                streamed = await http.post(
                    url,
                    json={"content": "sse"},
                    headers={**ada.headers, "Accept": "text/event-stream"},
                )
                assert streamed.status_code == 201, streamed.text
                # The quota (3) is spent across the three ways in: each now refuses.
                refused_plain = await http.post(
                    url, json={"content": "one more", "reply": "none"}, headers=ada.headers
                )
                refused_sse = await http.post(
                    url,
                    json={"content": "and another"},
                    headers={**ada.headers, "Accept": "text/event-stream"},
                )
                refused_ws = await ws.request(
                    {"type": "message", "session_id": session_id, "content": "ws again"}
                )
                history = await http.get(url, headers=ada.headers)
        finally:
            await ws.close()
    for response in (refused_plain, refused_sse):
        assert response.status_code == 429, response.text
        assert response.json()["error"]["code"] == "rate_limited"
        assert int(response.headers["Retry-After"]) >= 1
    assert refused_ws["code"] == "rate_limited"
    users = [m["content"] for m in history.json()["data"]["messages"] if m["role"] == "user"]
    assert users == ["ws", "rest", "sse"]


# A byte-bounded outbox ------------------------------------------------------------------


@pytest.mark.slow
async def test_a_reader_that_stops_is_closed_1013_once_its_backlog_passes_the_byte_bound(
    database_url: str,
) -> None:
    bound = 65_536
    async with serve(
        database_url,
        send_queue_bytes=bound,
        send_queue_frames=100_000,  # only the byte bound can fire
        messages_per_window=10_000,
        frames_per_window=10_000,
    ) as server:
        hub = server.container.hub
        ada, bob, session_id = await pair(server)
        sender, _ = await WSClient.connect(server.ws_url, ada.access_token)
        slow = await RawWebSocket.connect(server.port, bob.access_token, receive_buffer=4096)
        try:
            await sender.request({"type": "join", "session_id": session_id})
            await slow.recv_json("welcome")
            await slow.send_json({"type": "join", "session_id": session_id, "id": "j"})
            await slow.recv_json("joined")
            (conn,) = [c for c in hub.connections.values() if c.user_id == bob.id]
            # From here on the slow client reads nothing (not even into its stream
            # reader's buffer). Small frames, many of them.
            slow.writer.transport.pause_reading()
            sent = 0
            while conn.conn_id in hub.connections and sent < 2_000:
                ack = await sender.request(
                    {
                        "type": "message",
                        "session_id": session_id,
                        "content": f"{sent:05d} " + "x" * 2_000,
                        "reply": "none",
                    }
                )
                assert ack["type"] == "ack"
                sent += 1
                # Never more than the bound waits in the outbox.
                assert sum(len(text) for text in conn._outbox) <= bound
            await eventually(lambda: conn.conn_id not in hub.connections)
            # What reached the socket before the drop is bounded too: about the
            # transport's high-water mark plus one write, not the whole backlog.
            assert sent * 2_000 > 4 * bound
            # The client reads again: what was on its way, then the 1013.
            slow.writer.transport.resume_reading()
            code = await asyncio.wait_for(slow.recv_close(), 10)
            assert code == 1013
            pong = await sender.request({"type": "ping"})
            assert pong["type"] == "pong"
        finally:
            slow.close()
            await sender.close()


# Every frame type is rate limited -------------------------------------------------------


async def test_join_and_leave_are_rate_limited_per_user(database_url: str) -> None:
    async with serve(database_url, joins_per_window=4, join_window_s=60) as server:
        ada, _, session_id = await pair(server)
        client, _ = await WSClient.connect(server.ws_url, ada.access_token)
        try:
            replies = []
            for _ in range(3):
                replies.append(await client.request({"type": "join", "session_id": session_id}))
                replies.append(await client.request({"type": "leave", "session_id": session_id}))
            pong = await client.request({"type": "ping"})
        finally:
            await client.close()
    assert [r["type"] for r in replies] == ["joined", "left", "joined", "left", "error", "error"]
    assert {r["code"] for r in replies[4:]} == {"rate_limited"}
    assert all(0 < r["retry_after"] <= 60 for r in replies[4:])
    assert pong["type"] == "pong"


async def test_every_frame_type_counts_against_the_connections_frame_limit(
    database_url: str,
) -> None:
    async with serve(database_url, frames_per_window=5, frame_window_s=60) as server:
        ada, _, session_id = await pair(server)
        client, _ = await WSClient.connect(server.ws_url, ada.access_token)
        try:
            frames: list[dict[str, object]] = [
                {"type": "ping"},
                {"type": "join", "session_id": session_id},
                {"type": "typing", "session_id": session_id, "active": True},
                {"type": "cancel", "session_id": session_id, "stream_id": "nope"},
                {"type": "no-such-type"},  # bad frames cost their sender too
                {"type": "ping"},
                {"type": "resume", "session_id": session_id, "stream_id": "s", "offset": 0},
                {"type": "refresh", "token": ada.access_token},
            ]
            replies = [await client.request(frame) for frame in frames]
        finally:
            await client.close()
    codes = [r.get("code", r["type"]) for r in replies]
    assert codes[:5] == ["pong", "joined", "ack", "not_found", "bad_request"]
    assert codes[5:] == ["rate_limited"] * 3
    assert all(r["retry_after"] > 0 for r in replies[5:])


# Paged replays --------------------------------------------------------------------------


async def test_a_join_replays_a_bounded_page_and_the_rest_pages_over_rest(
    database_url: str,
) -> None:
    size = 3_000
    async with serve(
        database_url, replay_limit=100, replay_max_chars=10_000, messages_per_window=100
    ) as server:
        ada, _, session_id = await pair(server)
        url = f"/v1/sessions/{session_id}/messages"
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            for n in range(12):
                response = await http.post(
                    url,
                    json={"content": f"{n:02d}" + "y" * size, "reply": "none"},
                    headers=ada.headers,
                )
                assert response.status_code == 201, response.text
            client, _ = await WSClient.connect(server.ws_url, ada.access_token)
            try:
                joined = await client.request(
                    {"type": "join", "session_id": session_id, "since_seq": 0}
                )
            finally:
                await client.close()
            history = joined["history"]
            # 10,000 characters' worth: three messages, and a flag to page the rest.
            assert [m["seq"] for m in history] == [1, 2, 3]
            assert joined["recovered"] is False
            assert joined["last_seq"] == 12
            rest = await http.get(
                url, params={"after_seq": history[-1]["seq"], "limit": 200}, headers=ada.headers
            )
        seqs = [m["seq"] for m in rest.json()["data"]["messages"]]
        assert seqs == list(range(4, 13))


# Connection caps and the header deadline ------------------------------------------------


async def _open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def test_a_connection_that_never_finishes_its_headers_is_closed(database_url: str) -> None:
    async with serve(database_url, header_timeout_s=0.5) as server:
        silent_reader, silent = await _open(server.port)
        partial_reader, partial = await _open(server.port)
        try:
            partial.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the rest
            await partial.drain()
            for reader in (silent_reader, partial_reader):
                answer = await asyncio.wait_for(reader.read(), 10)  # to EOF: closed
                assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer
            # A request that completes its headers in time is served as before.
            async with httpx.AsyncClient(base_url=server.http_url) as http:
                assert (await http.get("/healthz")).status_code == 200
        finally:
            silent.close()
            partial.close()


async def test_a_keep_alive_connection_trickling_its_next_request_is_closed(
    database_url: str,
) -> None:
    async with serve(database_url, header_timeout_s=0.5) as server:
        reader, writer = await _open(server.port)
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            # The next request starts and its headers trickle in, a byte at a time.
            next_request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200

            async def trickle() -> None:
                for byte in next_request:
                    writer.write(bytes([byte]))
                    await asyncio.sleep(0.05)

            trickling = asyncio.create_task(trickle())
            try:
                answer = await asyncio.wait_for(reader.read(), 10)
            finally:
                trickling.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await trickling
            assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer
        finally:
            writer.close()


async def test_sockets_per_client_address_are_capped(database_url: str) -> None:
    async with serve(database_url, max_connections_per_ip=3) as server:
        held = [await _open(server.port) for _ in range(3)]
        reader, writer = await _open(server.port)
        try:
            answer = await asyncio.wait_for(reader.read(), 10)
            assert answer.startswith(b"HTTP/1.1 429"), answer
            assert b"rate_limited" in answer
            # One let go: there is room again.
            held.pop()[1].close()
            async with httpx.AsyncClient(base_url=server.http_url) as http:

                async def served() -> bool:
                    try:
                        return (await http.get("/healthz")).status_code == 200
                    except httpx.TransportError:
                        return False

                deadline = asyncio.get_running_loop().time() + 5
                while not await served():
                    assert asyncio.get_running_loop().time() < deadline
                    await asyncio.sleep(0.05)
        finally:
            writer.close()
            for _, held_writer in held:
                held_writer.close()


async def test_websocket_connections_per_user_are_capped_with_429_at_the_handshake(
    database_url: str,
) -> None:
    async with serve(database_url, max_connections_per_user=2) as server:
        hub = server.container.hub
        ada, bob, _ = await pair(server)
        first, _ = await WSClient.connect(server.ws_url, ada.access_token)
        second, _ = await WSClient.connect(server.ws_url, ada.access_token)
        try:
            with pytest.raises(InvalidStatus) as refused:
                await WSClient.connect(server.ws_url, ada.access_token)
            response = refused.value.response
            assert response.status_code == 429
            assert orjson.loads(response.body)["error"]["code"] == "rate_limited"
            assert int(response.headers["Retry-After"]) >= 1
            # Another user is not affected, and a closed connection frees its place.
            other, _ = await WSClient.connect(server.ws_url, bob.access_token)
            await other.close()
            await first.close()
            await eventually(lambda: sum(c.user_id == ada.id for c in hub.connections.values()) < 2)
            third, _ = await WSClient.connect(server.ws_url, ada.access_token)
            await third.close()
        finally:
            await first.close()
            await second.close()


async def test_behind_a_trusted_proxy_websockets_are_capped_per_forwarded_address(
    database_url: str,
) -> None:
    async with serve(database_url, trust_proxy_headers=True, max_connections_per_ip=1) as server:
        ada, bob, _ = await pair(server)
        first, _ = await WSClient.connect(
            server.ws_url, ada.access_token, additional_headers={"X-Forwarded-For": "203.0.113.7"}
        )
        try:
            with pytest.raises(InvalidStatus) as refused:
                await WSClient.connect(
                    server.ws_url,
                    bob.access_token,
                    additional_headers={"X-Forwarded-For": "203.0.113.7"},
                )
            assert refused.value.response.status_code == 429
            # Every socket comes from the proxy (127.0.0.1): another client behind it
            # is not refused for the proxy's count.
            other, _ = await WSClient.connect(
                server.ws_url,
                bob.access_token,
                additional_headers={"X-Forwarded-For": "198.51.100.2"},
            )
            await other.close()
        finally:
            await first.close()


async def test_parley_serve_applies_the_header_deadline_and_the_address_cap(
    tmp_path: Path,
) -> None:
    # ``parley serve`` builds its own uvicorn options: the guards must survive them.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("PARLEY_", "JWT_"))}
    env = keep | {
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'serve.db'}",
        "JWT_SECRET": TEST_JWT_SECRET,
        "LOG_JSON": "false",
        "REDIS_URL": "",
        "OPENROUTER_API_KEY": "",
        "HEADER_TIMEOUT_S": "0.5",
        "MAX_CONNECTIONS_PER_IP": "2",
    }
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "parley"),
        "serve",
        "--port",
        str(port),
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    try:
        async with asyncio.timeout(30):
            line = b""
            while b"Application startup complete" not in line:
                line = await process.stderr.readline()
                assert line, "the server exited before starting"
            while True:  # the socket is bound just after the startup line
                try:
                    first = await _open(port)
                    break
                except ConnectionRefusedError:
                    await asyncio.sleep(0.05)
        second = await _open(port)
        third_reader, third = await _open(port)
        assert (await asyncio.wait_for(third_reader.read(), 10)).startswith(b"HTTP/1.1 429")
        for reader, _ in (first, second):
            answer = await asyncio.wait_for(reader.read(), 10)
            assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer
        for _, writer in (first, second, (third_reader, third)):
            writer.close()
    finally:
        process.kill()
        await process.wait()
