"""Bad frames get an ``error`` and the connection stays open; only an oversized frame
closes it (1009)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from server.app import create_app
from tests.conftest import LiveServer, TestUser, create_session, make_settings, register_user
from tests.ws.rawws import close_code
from tests.wsclient import WSClient

MAX_FRAME_BYTES = 2048
MAX_CONTENT_CHARS = 50


@pytest.fixture
async def strict_server(database_url: str) -> AsyncIterator[LiveServer]:
    settings = make_settings(
        database_url, max_frame_bytes=MAX_FRAME_BYTES, max_content_chars=MAX_CONTENT_CHARS
    )
    server = LiveServer(create_app(settings))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def member(strict_server: LiveServer) -> AsyncIterator[tuple[WSClient, str]]:
    """A connected client that joined a session of its own."""
    async with httpx.AsyncClient(base_url=strict_server.http_url) as http:
        ada: TestUser = await register_user(http, "Ada")
        session_id = await create_session(http, ada, title="frames")
    client, _ = await WSClient.connect(strict_server.ws_url, ada.access_token)
    try:
        await client.request({"type": "join", "session_id": session_id})
        yield client, session_id
    finally:
        await client.close()


async def assert_still_open(client: WSClient) -> None:
    pong = await client.request({"type": "ping"})
    assert pong["type"] == "pong"


@pytest.mark.storage_free
@pytest.mark.parametrize(
    "raw",
    ["{not json", "[1, 2, 3]", '"a string"', "42", "null", ""],
    ids=["broken", "array", "string", "number", "null", "empty"],
)
async def test_text_that_is_not_a_json_object_gets_bad_request_and_the_connection_stays(
    member: tuple[WSClient, str], raw: str
) -> None:
    client, _ = member
    await client.send_raw(raw)
    error = await client.next("error")
    assert error["code"] == "bad_request"
    assert "id" not in error
    await assert_still_open(client)


@pytest.mark.storage_free
async def test_a_binary_frame_gets_bad_request_and_the_connection_stays(
    member: tuple[WSClient, str],
) -> None:
    client, _ = member
    await client.send_raw(b'{"type": "ping"}')
    error = await client.next("error")
    assert error["code"] == "bad_request"
    await assert_still_open(client)


def frames(session_id: str) -> list[tuple[str, dict[str, Any]]]:
    """(case, frame) pairs that parse as objects but are wrong."""
    return [
        ("unknown type", {"type": "shout"}),
        ("no type", {"session_id": session_id}),
        ("type not a string", {"type": 7}),
        ("join without session", {"type": "join"}),
        ("message without content", {"type": "message", "session_id": session_id}),
        ("since_seq a string", {"type": "join", "session_id": session_id, "since_seq": "x"}),
        ("since_seq a bool", {"type": "join", "session_id": session_id, "since_seq": True}),
        ("active a string", {"type": "typing", "session_id": session_id, "active": "yes"}),
        (
            "negative offset",
            {"type": "resume", "session_id": session_id, "stream_id": "s", "offset": -1},
        ),
        ("content a number", {"type": "message", "session_id": session_id, "content": 5}),
        ("session not a uuid", {"type": "leave", "session_id": "nope"}),
    ]


@pytest.mark.storage_free
async def test_frames_with_unknown_types_or_wrong_fields_get_an_error_with_their_id(
    member: tuple[WSClient, str],
) -> None:
    client, session_id = member
    for case, frame in frames(session_id):
        reply = await client.request(frame)
        assert reply["type"] == "error", case
        assert reply["code"] in ("bad_request", "not_found"), (case, reply)
        await assert_still_open(client)


async def test_content_too_long_or_empty_gets_an_error_and_stores_nothing(
    member: tuple[WSClient, str],
) -> None:
    client, session_id = member
    for content in ("x" * (MAX_CONTENT_CHARS + 1), "", "   "):
        reply = await client.request(
            {"type": "message", "session_id": session_id, "content": content, "reply": "none"}
        )
        assert reply["type"] == "error", content
        assert reply["code"] in ("bad_request", "too_large"), reply
        await assert_still_open(client)
    fits = await client.request(
        {"type": "message", "session_id": session_id, "content": "x" * MAX_CONTENT_CHARS}
    )
    assert fits["type"] == "ack"
    assert fits["message"]["seq"] == 1


@pytest.mark.storage_free
async def test_an_id_that_is_not_a_short_string_is_refused_without_echoing_it(
    member: tuple[WSClient, str],
) -> None:
    client, _ = member
    for frame_id in (5, "i" * 500):
        await client.send({"type": "ping", "id": frame_id})
        error = await client.next("error")
        assert error["code"] == "bad_request"
        assert "id" not in error
    await assert_still_open(client)


@pytest.mark.storage_free
async def test_a_frame_over_the_size_limit_closes_the_connection_with_1009(
    member: tuple[WSClient, str],
) -> None:
    client, session_id = member
    await client.send(
        {"type": "message", "session_id": session_id, "content": "x" * (MAX_FRAME_BYTES * 2)}
    )
    assert await close_code(client) == 1009
