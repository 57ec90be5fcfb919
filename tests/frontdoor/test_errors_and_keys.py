"""The front door's credentials (access token, API key) and its errors, in OpenAI's
shape and statuses, as the ``openai`` package sees them."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai
import pytest

from server.app import create_app
from tests.conftest import LiveServer, TestUser, make_settings, register_user
from tests.fakes.openrouter import FakeOpenRouter, HttpError, MidStreamError, Stream
from tests.frontdoor.conftest import OpenAIFor

MODEL = "openai/gpt-4o-mini"


def _shape(body: object) -> dict[str, object]:
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    return error


async def _listed_once_used(client: httpx.AsyncClient, user: TestUser) -> dict[str, Any]:
    """The key list, once the key's last use is recorded (written off the request's path)."""
    for _ in range(100):
        listed = (await client.get("/v1/me/api-keys", headers=user.headers)).json()["data"]
        if listed["api_keys"][0]["last_used_at"] is not None:
            break
        await asyncio.sleep(0.02)
    return listed  # type: ignore[no-any-return]


async def test_an_api_key_drives_the_front_door_until_it_is_revoked(
    live_client: httpx.AsyncClient,
    room: tuple[TestUser, TestUser, str],
    openai_for: OpenAIFor,
    fake_openrouter: FakeOpenRouter,
) -> None:
    ada, _, session_id = room
    created = await live_client.post(
        "/v1/me/api-keys", json={"name": "editor"}, headers=ada.headers
    )
    key = created.json()["data"]
    fake_openrouter.enqueue(Stream(["by ", "key"]))
    client = openai_for(key["key"])

    answer = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "with a key"}],
        extra_headers={"X-Parley-Session": session_id},
    )
    listed = await _listed_once_used(live_client, ada)
    await live_client.delete(f"/v1/me/api-keys/{key['id']}", headers=ada.headers)
    with pytest.raises(openai.AuthenticationError) as refused:
        await client.models.list()

    assert answer.choices[0].message.content == "by key"
    history = (
        await live_client.get(f"/v1/sessions/{session_id}/messages", headers=ada.headers)
    ).json()["data"]["messages"]
    assert history[0]["user_id"] == ada.id  # the key's owner asked
    assert listed["api_keys"][0]["id"] == key["id"]
    assert listed["api_keys"][0]["last_used_at"] is not None
    assert refused.value.status_code == 401
    assert _shape({"error": refused.value.body})["type"] == "authentication_error"


async def test_without_credentials_or_with_a_bad_one_the_answer_is_401_in_openai_shape(
    live_server: LiveServer,
) -> None:
    async with httpx.AsyncClient(base_url=live_server.http_url) as anonymous:
        none = await anonymous.post("/v1/chat/completions", json={})
        bad_key = await anonymous.get(
            "/v1/models", headers={"Authorization": "Bearer pk_not-a-key"}
        )
        bad_token = await anonymous.get("/v1/models", headers={"Authorization": "Bearer x.y.z"})

    for response in (none, bad_key, bad_token):
        assert response.status_code == 401
        assert response.headers["www-authenticate"].startswith("Bearer")
        assert _shape(response.json())["code"] == "invalid_api_key"


async def test_requests_the_room_cannot_take_are_refused_in_openai_shape(
    live_client: httpx.AsyncClient,
    room: tuple[TestUser, TestUser, str],
    openai_for: OpenAIFor,
    fake_openrouter: FakeOpenRouter,
) -> None:
    ada, _, session_id = room
    eve = await register_user(live_client, "Eve")
    client = openai_for(ada.access_token)
    user = [{"role": "user", "content": "hello"}]

    with pytest.raises(openai.NotFoundError) as no_model:
        await client.chat.completions.create(model="gpt-9", messages=user)  # type: ignore[arg-type]
    with pytest.raises(openai.NotFoundError) as stranger:
        await openai_for(eve.access_token).chat.completions.create(
            model=MODEL,
            messages=user,  # type: ignore[arg-type]
            extra_headers={"X-Parley-Session": session_id},
        )
    with pytest.raises(openai.BadRequestError) as not_a_question:
        await client.chat.completions.create(
            model=MODEL,
            messages=[*user, {"role": "assistant", "content": "hi"}],  # type: ignore[list-item]
        )
    malformed = await live_client.post(
        "/v1/chat/completions",
        content=b"{not json",
        headers={**ada.headers, "Content-Type": "application/json"},
    )
    no_messages = await live_client.post(
        "/v1/chat/completions", json={"model": MODEL, "messages": []}, headers=ada.headers
    )

    assert no_model.value.status_code == 404
    assert _shape({"error": no_model.value.body})["code"] == "model_not_found"
    assert _shape({"error": no_model.value.body})["param"] == "model"
    assert stranger.value.status_code == 404
    assert not_a_question.value.status_code == 400
    assert _shape({"error": not_a_question.value.body})["param"] == "messages"
    for response in (malformed, no_messages):
        assert response.status_code == 400
        assert _shape(response.json())["type"] == "invalid_request_error"
    assert _shape(no_messages.json())["param"] == "messages"
    assert fake_openrouter.chat_requests == []


async def test_an_upstream_failure_before_any_text_is_a_503(
    room: tuple[TestUser, TestUser, str],
    openai_for: OpenAIFor,
    fake_openrouter: FakeOpenRouter,
) -> None:
    ada, _, session_id = room
    fake_openrouter.enqueue(*[HttpError(503, "no capacity")] * 3)

    with pytest.raises(openai.APIStatusError) as down:
        await openai_for(ada.access_token).chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "anyone?"}],
            extra_headers={"X-Parley-Session": session_id},
            stream=True,
        )

    assert down.value.status_code == 503
    assert _shape({"error": down.value.body})["type"] == "server_error"
    assert _shape({"error": down.value.body})["code"] == "service_unavailable"


async def test_over_the_message_quota_the_answer_is_a_429_with_retry_after(
    database_url: str, fake_openrouter: FakeOpenRouter
) -> None:
    settings = make_settings(
        database_url,
        openrouter_api_key="sk-or-test",
        openrouter_base_url=fake_openrouter.base_url,
        messages_per_window=1,
    )
    server = LiveServer(create_app(settings))
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.http_url) as http:
            ada = await register_user(http, "Ada")
        client = openai.AsyncOpenAI(
            base_url=server.http_url + "/v1", api_key=ada.access_token, max_retries=0
        )
        async with client:
            await client.chat.completions.create(
                model="parley", messages=[{"role": "user", "content": "one"}]
            )
            with pytest.raises(openai.RateLimitError) as limited:
                await client.chat.completions.create(
                    model="parley", messages=[{"role": "user", "content": "two"}]
                )
    finally:
        await server.stop()

    assert limited.value.status_code == 429
    assert limited.value.response.headers.get("retry-after")
    assert _shape({"error": limited.value.body})["code"] == "rate_limit_exceeded"


async def test_an_answer_that_fails_part_way_is_an_error_whole_and_an_error_event_streamed(
    room: tuple[TestUser, TestUser, str],
    openai_for: OpenAIFor,
    fake_openrouter: FakeOpenRouter,
) -> None:
    ada, _, session_id = room
    fake_openrouter.enqueue(MidStreamError(["Half "]), MidStreamError(["Part "]))
    client = openai_for(ada.access_token)
    headers = {"X-Parley-Session": session_id}

    with pytest.raises(openai.APIStatusError) as whole:
        await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "one"}], extra_headers=headers
        )
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "two"}],
        extra_headers=headers,
        stream=True,
    )
    seen = ""
    with pytest.raises(openai.APIError) as streamed:
        async for chunk in stream:
            seen += (chunk.choices[0].delta.content or "") if chunk.choices else ""

    assert whole.value.status_code >= 500
    assert _shape({"error": whole.value.body})["type"] == "server_error"
    assert seen == "Part "
    assert streamed.value.message
