"""Liveness, readiness and metrics."""

from __future__ import annotations

import socket

import httpx
import pytest

from server.app import create_app
from tests.conftest import make_settings


@pytest.mark.storage_free
async def test_healthz_answers_ok(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"success": True, "data": {"status": "ok"}}


async def test_readyz_is_ready_when_the_database_answers(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")

    assert response.status_code == 200
    # The embedded default: the database, the in-memory bus and the offline model.
    assert response.json()["data"] == {
        "ready": True,
        "checks": {"database": "ok", "bus": "ok", "llm": "ok"},
    }


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_readyz_is_503_when_the_database_is_unreachable() -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{_closed_port()}/nothing"
    app = create_app(make_settings(url, migrate_on_start=False))

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            ready = await client.get("/readyz")
            alive = await client.get("/healthz")

    assert ready.status_code == 503
    body = ready.json()
    assert body["success"] is False
    assert body["error"]["code"] == "unavailable"
    assert body["data"]["checks"]["database"] != "ok"
    assert alive.status_code == 200


@pytest.mark.storage_free
async def test_metrics_are_prometheus_text_counting_requests(client: httpx.AsyncClient) -> None:
    await client.get("/healthz")

    response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "# TYPE parley_http_requests_total counter" in text
    assert 'parley_http_requests_total{method="GET",route="/healthz",status="200"}' in text
