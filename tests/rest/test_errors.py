"""Malformed requests, limits, and the headers every response carries."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import create_session, register_user
from tests.rest.conftest import AppClient

# Input checks, headers and routing: the database makes no difference.
pytestmark = pytest.mark.storage_free


async def _post_raw(client: httpx.AsyncClient, path: str, raw: bytes) -> httpx.Response:
    return await client.post(path, content=raw, headers={"Content-Type": "application/json"})


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b'{"email": "a@b.c", ', "malformed JSON"),
        (b"[1, 2, 3]", "JSON object"),
        (b'"just a string"', "JSON object"),
        (b"", "body is required"),
    ],
)
async def test_a_body_that_is_not_a_json_object_is_a_bad_request(
    client: httpx.AsyncClient, raw: bytes, needle: str
) -> None:
    response = await _post_raw(client, "/v1/auth/register", raw)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "bad_request"
    assert needle in error["message"]


async def test_a_field_of_the_wrong_type_is_named_in_the_details(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/v1/auth/register", json={"email": "a@example.com", "password": 12345678, "name": "A"}
    )

    assert response.status_code == 400
    details = response.json()["error"]["details"]
    assert [d["field"] for d in details] == ["password"]


async def test_an_unknown_field_is_refused(client: httpx.AsyncClient) -> None:
    user = await register_user(client)

    response = await client.post("/v1/sessions", json={"colour": "red"}, headers=user.headers)

    assert response.status_code == 400
    assert response.json()["error"]["details"][0]["field"] == "colour"


async def test_a_body_over_the_limit_is_too_large(client_with: AppClient) -> None:
    async with client_with(max_body_bytes=2048) as client:
        user = await register_user(client)
        session_id = await create_session(client, user)

        response = await client.post(
            f"/v1/sessions/{session_id}/messages",
            json={"content": "x" * 4096, "reply": "none"},
            headers=user.headers,
        )

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"


async def test_a_streamed_body_over_the_limit_is_too_large(client_with: AppClient) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(4):
            yield b"x" * 1024

    async with client_with(max_body_bytes=2048) as client:
        response = await client.post(
            "/v1/auth/register", content=chunks(), headers={"Content-Type": "application/json"}
        )

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "too_large"


async def test_an_unknown_endpoint_is_a_not_found_envelope(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/no-such-thing")

    assert response.status_code == 404
    assert response.json()["success"] is False
    assert response.json()["error"]["code"] == "not_found"


async def test_a_wrong_method_is_405_in_the_envelope(client: httpx.AsyncClient) -> None:
    response = await client.delete("/v1/me")

    assert response.status_code == 405
    assert response.json()["success"] is False


async def test_every_response_carries_a_request_id_and_echoes_the_callers(
    client: httpx.AsyncClient,
) -> None:
    made = await client.get("/healthz")
    echoed = await client.get("/v1/no-such-thing", headers={"X-Request-ID": "trace-abc-123"})

    assert len(made.headers["x-request-id"]) >= 16
    assert echoed.headers["x-request-id"] == "trace-abc-123"
    assert echoed.json()["error"]["request_id"] == "trace-abc-123"


async def test_responses_carry_the_security_headers(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")

    csp = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp
    assert "default-src 'self'" in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"


async def test_a_cors_preflight_from_an_allowed_origin_is_answered(
    client_with: AppClient,
) -> None:
    origin = "https://app.example"
    async with client_with(allowed_origins=[origin]) as client:
        allowed = await client.options(
            "/v1/sessions",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "Authorization, Content-Type",
            },
        )
        foreign = await client.options(
            "/v1/sessions",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )

    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == origin
    assert allowed.headers["access-control-allow-credentials"] == "true"
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert foreign.status_code == 400
    assert "access-control-allow-origin" not in foreign.headers
