"""The OpenAPI document matches the app, and the app matches the document.

The first tests keep the route table and ``server.openapi.ENDPOINTS`` in step; the
last one lets schemathesis generate requests from the document against the real
in-process app and checks that nothing answers 5xx or outside the documented schemas.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from server import openapi
from server.app import create_app
from tests.conftest import make_settings

EXAMPLES_PER_OPERATION = 25


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'openapi.db'}"


def test_every_route_of_the_app_is_documented(database_url: str) -> None:
    app = create_app(make_settings(database_url))

    assert openapi.undocumented(app.routes) == []


def test_every_documented_endpoint_exists(database_url: str) -> None:
    app = create_app(make_settings(database_url))

    assert openapi.stale(app.routes) == []


async def test_the_document_is_served_and_is_valid_openapi_3_1(database_url: str) -> None:
    app = create_app(make_settings(database_url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            response = await client.get("/openapi.json")

    assert response.status_code == 200
    document = response.json()
    assert document["openapi"] == "3.1.0"
    assert set(document["components"]["securitySchemes"]) == {"bearer", "cookie"}
    assert "requestBody" in document["paths"]["/v1/auth/register"]["post"]
    assert document["paths"]["/healthz"]["get"]["security"] == []
    # Every schema in the document compiles as JSON Schema (2020-12, as 3.1 uses).
    for name in document["components"]["schemas"]:
        root = {"components": document["components"], "$ref": f"#/components/schemas/{name}"}
        jsonschema_rs.validator_for(root)
    # Loading it is schemathesis's own structural validation of the document.
    schemathesis.openapi.from_dict(document)


async def _login(database_url: str) -> str:
    """An access token for a fresh user, made through a second app on the same database."""
    app = create_app(make_settings(database_url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            credentials = {"email": "fuzz@example.com", "password": "fuzz password"}
            await client.post("/v1/auth/register", json=credentials | {"name": "Fuzz"})
            login = await client.post("/v1/auth/login", json=credentials)
    return str(login.json()["data"]["access_token"])


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.mark.slow
def test_generated_requests_get_no_5xx_and_documented_answers(database_url: str) -> None:
    token = asyncio.run(_login(database_url))
    app = create_app(make_settings(database_url))
    # schemathesis runs the app (and its lifespan) on an event loop of its own.
    api = schemathesis.openapi.from_asgi("/openapi.json", app)
    headers = {"Authorization": f"Bearer {token}"}
    failures: list[str] = []
    statuses: list[int] = []
    labels: set[str] = set()
    for result in api.get_all_operations():
        operation = result.ok()
        labels.add(operation.label)

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def call(case: Any) -> None:
            response = case.call_and_validate(headers=headers, checks=CHECKS)
            statuses.append(response.status_code)

        try:
            call()
        except Exception as exc:
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)
    # Every operation but the document's own, which schemathesis leaves out.
    expected = {f"{m} {p}" for m, p, _ in openapi.route_keys(app.routes)}
    assert labels == expected - {f"GET {openapi.OPENAPI_PATH}"}
    assert len(statuses) >= len(labels)
    # Authenticated calls got through to the handlers, not only to the 401 gate.
    assert any(200 <= status < 300 for status in statuses)
