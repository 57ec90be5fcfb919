"""Admins set per-user budgets over REST and with ``parley budget``; nobody else may."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import update

from db.models import User
from tests.conftest import TEST_JWT_SECRET, TestUser, register_user

PARLEY = str(Path(sys.executable).parent / "parley")


async def admin_of(client: httpx.AsyncClient) -> TestUser:
    admin = await register_user(client, "Root")
    container = client._transport.app.state.container  # type: ignore[attr-defined]
    async with container.database.transaction() as session:
        await session.execute(
            update(User).where(User.id == uuid.UUID(admin.id)).values(role="admin")
        )
    return admin


async def test_an_admin_overrides_reads_and_clears_a_users_budget(
    client: httpx.AsyncClient,
) -> None:
    admin, ada = await admin_of(client), await register_user(client)
    url = f"/v1/users/{ada.id}/budget"

    before = await client.get(url, headers=admin.headers)
    tokens = await client.patch(
        url, json={"tokens_per_period": 5000, "period": "month"}, headers=admin.headers
    )
    money = await client.patch(url, json={"usd_per_period": 2.5}, headers=admin.headers)
    unlimited_tokens = await client.patch(
        url, json={"tokens_per_period": None}, headers=admin.headers
    )
    mine = await client.get("/v1/me/usage", headers=ada.headers)
    cleared = await client.delete(url, headers=admin.headers)

    assert before.status_code == 200, before.text
    assert before.json()["data"]["limits"] == {
        "period": "day",
        "tokens_per_period": None,
        "usd_per_period": None,
        "overridden": False,
    }
    assert tokens.json()["data"]["limits"]["tokens_per_period"] == 5000
    assert tokens.json()["data"]["budget"]["tokens"] == {"limit": 5000, "used": 0, "left": 5000}
    # A field left out keeps its value.
    assert money.json()["data"]["limits"] == {
        "period": "month",
        "tokens_per_period": 5000,
        "usd_per_period": 2.5,
        "overridden": True,
    }
    assert unlimited_tokens.json()["data"]["limits"]["tokens_per_period"] is None
    assert mine.json()["data"]["budget"]["usd"] == {"limit": 2.5, "used": 0.0, "left": 2.5}
    assert mine.json()["data"]["budget"]["period"] == "month"
    assert mine.json()["data"]["spend"] == []
    assert cleared.json()["data"]["limits"]["overridden"] is False


async def test_only_an_admin_sees_or_changes_a_budget(client: httpx.AsyncClient) -> None:
    admin, ada = await admin_of(client), await register_user(client)
    url = f"/v1/users/{admin.id}/budget"

    answers = [
        await client.get(url, headers=ada.headers),
        await client.patch(url, json={"tokens_per_period": 1}, headers=ada.headers),
        await client.delete(url, headers=ada.headers),
    ]
    unknown = await client.get(f"/v1/users/{uuid.uuid4()}/budget", headers=admin.headers)
    bad = await client.patch(
        f"/v1/users/{ada.id}/budget", json={"tokens_per_period": 0}, headers=admin.headers
    )
    bad_period = await client.patch(
        f"/v1/users/{ada.id}/budget", json={"period": "week"}, headers=admin.headers
    )

    assert [a.status_code for a in answers] == [403, 403, 403]
    assert {a.json()["error"]["code"] for a in answers} == {"forbidden"}
    assert unknown.status_code == 404
    assert bad.status_code == 400 and bad_period.status_code == 400


def parley(tmp_path: Path, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("PARLEY_", "JWT_"))}
    env = keep | {
        "DATABASE_URL": database_url,
        "JWT_SECRET": TEST_JWT_SECRET,
        "LOG_JSON": "false",
        "REDIS_URL": "",
        "OPENROUTER_API_KEY": "",
        "BUDGET_TOKENS_PER_PERIOD": "100000",
    }
    return subprocess.run(
        [PARLEY, "budget", *args], cwd=tmp_path, env=env, capture_output=True, text=True
    )


def data(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stderr
    return orjson.loads(result.stdout)  # type: ignore[no-any-return]


@pytest.mark.timeout(180)  # three processes that import the app, on a busy machine
async def test_parley_budget_shows_sets_and_clears_what_the_server_enforces(
    client: httpx.AsyncClient, database_url: str, tmp_path: Path
) -> None:
    ada = await register_user(client)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return parley(tmp_path, database_url, *args, "--email", ada.email)

    shown = data(await asyncio.to_thread(run, "show"))
    changed = data(await asyncio.to_thread(run, "set", "--tokens", "none", "--usd", "1.5"))
    usage = (await client.get("/v1/me/usage", headers=ada.headers)).json()["data"]
    cleared = data(await asyncio.to_thread(run, "clear"))

    assert shown["user_id"] == ada.id
    assert shown["limits"]["tokens_per_period"] == 100000  # BUDGET_TOKENS_PER_PERIOD
    assert changed["limits"] == {
        "period": "day",
        "tokens_per_period": None,
        "usd_per_period": 1.5,
        "overridden": True,
    }
    assert usage["limits"] == changed["limits"]  # the server reads what the CLI set
    assert cleared["limits"]["overridden"] is False


@pytest.mark.timeout(120)  # two processes that import the app
async def test_parley_budget_refuses_an_unknown_user_and_an_empty_change(
    client: httpx.AsyncClient, database_url: str, tmp_path: Path
) -> None:
    await register_user(client)  # the database exists and is migrated

    nothing = await asyncio.to_thread(parley, tmp_path, database_url, "set", "--email", "a@b.c")
    ghost = await asyncio.to_thread(
        parley, tmp_path, database_url, "show", "--email", "ghost@example.com"
    )

    assert nothing.returncode == 2 and "nothing to set" in nothing.stderr
    assert ghost.returncode == 1 and "no user with email ghost@example.com" in ghost.stderr
