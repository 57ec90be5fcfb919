"""The OpenAPI document matches the app, and the app matches the document.

The first tests keep the route table and ``server.rest.openapi.ENDPOINTS`` in step; the
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

from server.app import create_app
from server.rest import openapi
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


# Where a request the document's schemas allow may still be refused with 400: rules
# JSON Schema cannot say, each checked by the handler. Everything else must accept
# every schema-valid request.
SEMANTIC_400 = {
    # before_seq and after_seq together: give one cursor, not both.
    "GET /v1/sessions/{id}/messages": "before_seq and after_seq are exclusive",
    # exactly one of user_id or email.
    "POST /v1/sessions/{id}/members": "exactly one of user_id or email",
    # a document is UTF-8 text with something besides whitespace in it.
    "POST /v1/sessions/{id}/documents": "a document must be non-blank UTF-8 text",
    # an email address is checked by a validator, not by a pattern.
    "POST /v1/auth/register": "email address syntax",
    "POST /v1/auth/login": "email address syntax",
    # the refresh token comes from the body or from the cookie: one of them is needed.
    "POST /v1/auth/refresh": "a refresh token in the body or the cookie",
    # the last of the messages must be the user's turn, with text in it.
    "POST /v1/chat/completions": "the last message must be a user turn with text",
}
# It revokes every token of the fuzzing user, which would turn the rest into 401s.
NOT_FUZZED = ["POST /v1/auth/logout-all"]
# Bounded for CI: the whole run (coverage, fuzzing, stateful phases) stops here.
SCHEMATHESIS_MAX_TIME_S = 90
SCHEMATHESIS_EXAMPLES = 10


def _schemathesis_config(path: Path) -> Path:
    lines = []
    for name in SEMANTIC_400:
        lines += [
            "[[operations]]",
            f'include-name = "{name}"',
            "checks.positive_data_acceptance.expected-statuses = "
            '["2XX", "3XX", 400, 401, 403, 404, 409, 413, 429]',
            "",
        ]
    config = path / "schemathesis.toml"
    config.write_text("\n".join(lines))
    return config


class _ServerThread:
    """The app under uvicorn on a loopback port, in a thread with its own event loop,
    so that the schemathesis CLI (a subprocess) can reach it while the test waits."""

    def __init__(self, app: Any) -> None:
        import threading

        import uvicorn

        from server.serving import uvicorn_config

        config = uvicorn_config(app, app.state.settings, host="127.0.0.1", port=0)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        import time

        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.mark.slow
@pytest.mark.timeout(SCHEMATHESIS_MAX_TIME_S + 180)
def test_every_check_and_the_stateful_links_find_no_5xx_and_nothing_undocumented(
    database_url: str, tmp_path: Path
) -> None:
    """Schemathesis's own runner, as an operator would run it: every check, every phase
    (coverage of boundaries and negative cases, fuzzing, stateful sequences along the
    links it infers from the document), against a real uvicorn server."""
    import subprocess
    import sys

    settings = make_settings(
        database_url, login_attempts_per_window=100_000, messages_per_window=100_000
    )
    with _ServerThread(create_app(settings)) as url:
        credentials = {"email": "fuzz@example.com", "password": "fuzz password"}
        httpx.post(f"{url}/v1/auth/register", json=credentials | {"name": "Fuzz"})
        login = httpx.post(f"{url}/v1/auth/login", json=credentials)
        token = login.json()["data"]["access_token"]
        command = [
            str(Path(sys.executable).parent / "st"),
            "--no-color",
            "--config-file",
            str(_schemathesis_config(tmp_path)),
            "run",
            f"{url}/openapi.json",
            "--header",
            f"Authorization: Bearer {token}",
            "--checks",
            "all",
            "--max-examples",
            str(SCHEMATHESIS_EXAMPLES),
            "--max-time",
            str(SCHEMATHESIS_MAX_TIME_S),
            "--workers",
            "1",
            "--seed",
            "20261202",
            "--suppress-health-check",
            "all",
            *(arg for name in NOT_FUZZED for arg in ("--exclude-name", name)),
        ]
        run = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=SCHEMATHESIS_MAX_TIME_S + 120,
            cwd=tmp_path,
        )

    assert run.returncode == 0, run.stdout[-20_000:] + run.stderr[-5_000:]
    assert "Stateful" in run.stdout
