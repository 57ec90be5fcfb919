"""Input that used to reach the database or the clock unchecked and answer 500, and
the headers every error (500 and 405 included) must carry."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from starlette.applications import Starlette

from tests.conftest import TEST_JWT_SECRET, create_session, register_user

BEYOND_64_BITS = str(2**64)


async def test_patching_a_title_to_null_is_a_bad_request(client: httpx.AsyncClient) -> None:
    user = await register_user(client)
    session_id = await create_session(client, user, title="kept")

    response = await client.patch(
        f"/v1/sessions/{session_id}", json={"title": None}, headers=user.headers
    )

    assert response.status_code == 400, response.text
    assert response.json()["error"]["details"][0]["field"] == "title"
    kept = await client.get(f"/v1/sessions/{session_id}", headers=user.headers)
    assert kept.json()["data"]["title"] == "kept"


@pytest.mark.parametrize(
    "query",
    [
        f"before_seq={BEYOND_64_BITS}",
        f"after_seq={BEYOND_64_BITS}",
        f"after_seq=-{BEYOND_64_BITS}",
        "before_seq=" + "9" * 40,
        f"limit={BEYOND_64_BITS}",
    ],
)
async def test_history_cursors_beyond_64_bits_are_a_bad_request(
    client: httpx.AsyncClient, query: str
) -> None:
    user = await register_user(client)
    session_id = await create_session(client, user)

    response = await client.get(f"/v1/sessions/{session_id}/messages?{query}", headers=user.headers)

    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "bad_request"


def _token(user_id: str, **changes: Any) -> str:
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "sub": user_id,
        "iss": "parley",
        "aud": "parley",
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=5)).timestamp()),
        "jti": uuid.uuid4().hex,
    }
    claims.update(changes)
    return jwt.encode(claims, TEST_JWT_SECRET, algorithm="HS256")


@pytest.mark.storage_free
@pytest.mark.parametrize(
    "changes",
    [
        {"exp": 10**20},
        {"exp": 1e300},
        {"iat": -(10**20)},
        {"iat": -1e300},
    ],
    ids=["exp-huge-int", "exp-huge-float", "iat-far-past-int", "iat-far-past-float"],
)
async def test_a_signed_token_with_time_claims_out_of_range_is_unauthorized(
    client: httpx.AsyncClient, changes: dict[str, Any]
) -> None:
    user = await register_user(client)

    response = await client.get(
        "/v1/me", headers={"Authorization": f"Bearer {_token(user.id, **changes)}"}
    )

    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "unauthorized"


@pytest.mark.storage_free
async def test_an_unexpected_failure_answers_500_with_the_request_id(
    app: Starlette, monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions = app.state.container.sessions

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(sessions, "list_for", broken)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        user = await register_user(client)
        response = await client.get(
            "/v1/sessions", headers=user.headers | {"X-Request-ID": "trace-500"}
        )

    assert response.status_code == 500
    assert response.headers["X-Request-ID"] == "trace-500"
    error = response.json()["error"]
    assert error["code"] == "internal"
    assert error["request_id"] == "trace-500"
    assert "a bug" not in response.text
    # The security headers ride on a 500 as on any answer.
    assert "Content-Security-Policy" in response.headers


@pytest.mark.storage_free
async def test_a_405_names_the_allowed_methods(client: httpx.AsyncClient) -> None:
    user = await register_user(client)
    session_id = await create_session(client, user)

    response = await client.put(f"/v1/sessions/{session_id}", headers=user.headers)

    assert response.status_code == 405
    assert set(response.headers["Allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "PATCH"}
    assert response.json()["error"]["request_id"] == response.headers["X-Request-ID"]


@pytest.mark.storage_free
async def test_a_get_of_a_post_only_path_is_a_405_not_the_static_files_404(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/v1/auth/logout")

    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert response.json()["error"]["code"] == "bad_request"
    missing = await client.get("/v1/no-such-thing")
    assert missing.status_code == 404
