"""Versions over REST (issue 16, item 4): regenerate, edit, switch and list versions,
on the real app served on loopback; a member on a socket sees each change live."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from server.config import Settings
from tests.conftest import TestUser, make_settings
from tests.fakes.openrouter import FakeOpenRouter, Stream, fake_openrouter
from tests.stream.conftest import collect_stream
from tests.ws.conftest import Connect

__all__ = ["fake_openrouter"]


@pytest.fixture
def settings(database_url: str, fake_openrouter: FakeOpenRouter) -> Settings:
    return make_settings(
        database_url,
        openrouter_api_key="sk-or-test",
        openrouter_base_url=fake_openrouter.base_url,
        llm_model="openai/gpt-4o-mini",
    )


async def test_regenerate_edit_and_switch_through_rest(
    connect: Connect,
    room: tuple[TestUser, TestUser, str],
    fake_openrouter: FakeOpenRouter,
    live_client: httpx.AsyncClient,
) -> None:
    ada, bob, session_id = room
    bob_ws = await connect(bob)
    await bob_ws.request({"type": "join", "session_id": session_id})
    fake_openrouter.enqueue(Stream(["one"]), Stream(["two"]), Stream(["three"]))
    base = f"/v1/sessions/{session_id}/messages"

    posted = (await live_client.post(base, json={"content": "Count"}, headers=ada.headers)).json()
    first = await collect_stream(bob_ws, posted["data"]["stream_id"])
    assert first.end is not None
    question_id, answer_id = posted["data"]["message"]["id"], first.end["message"]["id"]

    response = await live_client.post(f"{base}/{answer_id}/regenerate", headers=bob.headers)
    assert response.status_code == 202, response.text
    again = await collect_stream(bob_ws, response.json()["data"]["stream_id"])
    assert again.end is not None and again.end["message"]["content"] == "two"

    response = await live_client.patch(
        f"{base}/{question_id}", json={"content": "Count again"}, headers=ada.headers
    )
    assert response.status_code == 200, response.text
    edited: dict[str, Any] = response.json()["data"]
    assert (edited["message"]["content"], edited["message"]["version"]) == ("Count again", 2)
    seen = await bob_ws.next("message.version", lambda f: f["message"]["id"] == question_id)
    assert seen["message"]["content"] == "Count again"
    third = await collect_stream(bob_ws, edited["stream_id"])
    assert third.end is not None
    assert (third.end["message"]["content"], third.end["message"]["version_count"]) == ("three", 3)

    response = await live_client.put(
        f"{base}/{answer_id}/version", json={"version": 1}, headers=bob.headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["data"]["message"]["content"] == "one"

    listed = (await live_client.get(f"{base}/{answer_id}/versions", headers=ada.headers)).json()
    assert [v["content"] for v in listed["data"]["versions"]] == ["one", "two", "three"]
    assert listed["data"]["message"]["version"] == 1

    history = (await live_client.get(base, headers=ada.headers)).json()["data"]["messages"]
    assert [(m["content"], m["version"], m["version_count"]) for m in history] == [
        ("Count again", 2, 2),
        ("one", 1, 3),
    ]


async def test_version_requests_are_checked(
    room: tuple[TestUser, TestUser, str],
    fake_openrouter: FakeOpenRouter,
    live_client: httpx.AsyncClient,
    connect: Connect,
) -> None:
    ada, bob, session_id = room
    ada_ws = await connect(ada)
    await ada_ws.request({"type": "join", "session_id": session_id})
    fake_openrouter.enqueue(Stream(["ok"]))
    base = f"/v1/sessions/{session_id}/messages"
    posted = (await live_client.post(base, json={"content": "Hi"}, headers=ada.headers)).json()
    await collect_stream(ada_ws, posted["data"]["stream_id"])
    question_id = posted["data"]["message"]["id"]

    async def status(method: str, url: str, user: TestUser, body: Any = None) -> int:
        response = await live_client.request(method, url, json=body, headers=user.headers)
        return response.status_code

    assert await status("PATCH", f"{base}/{question_id}", bob, {"content": "x"}) == 403
    assert await status("PATCH", f"{base}/{question_id}", ada, {"content": ""}) == 400
    assert await status("PUT", f"{base}/{question_id}/version", ada, {"version": 2}) == 404
    assert await status("PUT", f"{base}/{question_id}/version", ada, {"version": 0}) == 400
    stranger = {"Authorization": ada.headers["Authorization"]}
    other = await live_client.post("/v1/sessions", json={"title": "x"}, headers=stranger)
    elsewhere = f"/v1/sessions/{other.json()['data']['id']}/messages/{question_id}"
    assert await status("POST", f"{elsewhere}/regenerate", ada) == 404
    assert await status("POST", f"{base}/not-an-id/regenerate", ada) == 404
