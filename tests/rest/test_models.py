"""A session's model comes from the operator's allow-list (``LLM_MODELS``), which
defaults to ``LLM_MODEL`` and its fallbacks: a caller cannot pick a paid model."""

from __future__ import annotations

import httpx

from tests.conftest import create_session, register_user
from tests.rest.conftest import AppClient


async def test_a_model_outside_the_default_allow_list_is_refused(
    client: httpx.AsyncClient,
) -> None:
    user = await register_user(client)

    response = await client.post(
        "/v1/sessions", json={"title": "t", "model": "openai/o1-pro"}, headers=user.headers
    )

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "bad_request"
    assert error["details"][0]["field"] == "model"
    assert "openai/o1-pro" not in error["message"]  # not echoed back


async def test_patching_to_a_model_outside_the_allow_list_is_refused(
    client: httpx.AsyncClient,
) -> None:
    user = await register_user(client)
    session_id = await create_session(client, user)

    response = await client.patch(
        f"/v1/sessions/{session_id}", json={"model": "openai/o1-pro"}, headers=user.headers
    )

    assert response.status_code == 400, response.text
    got = await client.get(f"/v1/sessions/{session_id}", headers=user.headers)
    assert got.json()["data"]["model"] is None


async def test_the_default_model_and_its_fallbacks_are_allowed_by_default(
    client_with: AppClient,
) -> None:
    async with client_with(llm_model="a/default", llm_fallback_models="b/backup") as client:
        user = await register_user(client)
        for model in ("a/default", "b/backup"):
            response = await client.post(
                "/v1/sessions", json={"model": model}, headers=user.headers
            )
            assert response.status_code == 201, response.text
            assert response.json()["data"]["model"] == model


async def test_llm_models_replaces_the_allow_list(client_with: AppClient) -> None:
    async with client_with(llm_model="a/default", llm_models="c/cheap, d/other") as client:
        user = await register_user(client)
        allowed = await client.post("/v1/sessions", json={"model": "d/other"}, headers=user.headers)
        refused = await client.post(
            "/v1/sessions", json={"model": "b/backup"}, headers=user.headers
        )
        # Null always means the default model, whatever the list says.
        session_id = allowed.json()["data"]["id"]
        reset = await client.patch(
            f"/v1/sessions/{session_id}", json={"model": None}, headers=user.headers
        )

    assert allowed.status_code == 201, allowed.text
    assert refused.status_code == 400, refused.text
    assert reset.status_code == 200, reset.text
    assert reset.json()["data"]["model"] is None
