"""The real ``parley`` console script, run in subprocesses against a temporary SQLite."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from db.migrate import head_revision
from server.app import create_app
from tests.conftest import TEST_JWT_SECRET, make_settings

PARLEY = str(Path(sys.executable).parent / "parley")


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"


@pytest.fixture
def env(database_url: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("PARLEY_", "JWT_"))}
    return keep | {
        "DATABASE_URL": database_url,
        "JWT_SECRET": TEST_JWT_SECRET,
        "LOG_JSON": "false",
        "REDIS_URL": "",
        "OPENROUTER_API_KEY": "",
    }


def parley(
    tmp_path: Path, env: dict[str, str], *args: str, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    # cwd is the temp dir so that no .env or parley.secret of the checkout is read.
    return subprocess.run(
        [PARLEY, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_migrate_brings_a_new_database_to_the_head_revision(
    tmp_path: Path, env: dict[str, str]
) -> None:
    result = parley(tmp_path, env, "migrate")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"database at revision {head_revision()}"


def test_migrate_can_downgrade_to_base(tmp_path: Path, env: dict[str, str]) -> None:
    parley(tmp_path, env, "migrate")

    result = parley(tmp_path, env, "migrate", "--downgrade", "base")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "database at revision base"


@pytest.fixture
def migrated(tmp_path: Path, env: dict[str, str]) -> None:
    """The database exists: user commands refuse to create one."""
    assert parley(tmp_path, env, "migrate").returncode == 0


@pytest.mark.usefixtures("migrated")
async def test_a_token_minted_for_a_created_user_is_accepted_by_the_server(
    tmp_path: Path, env: dict[str, str], database_url: str
) -> None:
    env = env | {"PARLEY_PASSWORD": "cli password 1"}
    created = parley(tmp_path, env, "user", "create", "--email", "Ops@Example.com", "--name", "Ops")
    minted = parley(tmp_path, env, "token", "--email", "ops@example.com", "--ttl", "120")

    assert created.returncode == 0, created.stderr
    user_id, email, role = created.stdout.split()
    assert (email, role) == ("ops@example.com", "user")
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()
    app = create_app(make_settings(database_url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            me = await client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
            login = await client.post(
                "/v1/auth/login", json={"email": email, "password": "cli password 1"}
            )
    assert me.status_code == 200
    assert me.json()["data"]["id"] == user_id
    assert login.status_code == 200


@pytest.mark.usefixtures("migrated")
def test_user_create_makes_an_admin_and_refuses_a_taken_email(
    tmp_path: Path, env: dict[str, str]
) -> None:
    args = ("user", "create", "--email", "boss@example.com", "--name", "Boss")

    first = parley(tmp_path, env, *args, "--admin", "--password", "boss password")
    again = parley(tmp_path, env, *args, "--password", "boss password")

    assert first.returncode == 0, first.stderr
    assert first.stdout.split()[2] == "admin"
    assert again.returncode == 1
    assert again.stderr.strip() == "parley: an account with this email already exists"


def test_user_create_without_a_password_and_no_terminal_says_how_to_give_one(
    tmp_path: Path, env: dict[str, str]
) -> None:
    result = parley(tmp_path, env, "user", "create", "--email", "x@example.com", "--name", "X")

    assert result.returncode == 2
    assert "PARLEY_PASSWORD" in result.stderr


@pytest.mark.usefixtures("migrated")
def test_a_token_for_an_unknown_email_is_refused_in_one_line(
    tmp_path: Path, env: dict[str, str]
) -> None:
    result = parley(tmp_path, env, "token", "--email", "ghost@example.com")

    assert result.returncode == 1
    assert result.stderr.strip() == "parley: no user with email ghost@example.com"
    assert result.stdout == ""


@pytest.mark.parametrize("command", [("token", "--email", "ops@example.com"), ("user", "create")])
def test_user_commands_run_from_another_folder_create_no_database(
    tmp_path: Path, env: dict[str, str], command: tuple[str, ...]
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = env | {"DATABASE_URL": "sqlite:///./parley.db", "PARLEY_PASSWORD": "long enough 1"}
    args = command if command[0] == "token" else (*command, "--email", "x@e.com", "--name", "X")

    result = parley(elsewhere, env, *args)

    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(elsewhere / "parley.db") in lines[0]
    assert "parley migrate" in lines[0]
    assert not (elsewhere / "parley.db").exists()


def test_serve_on_postgresql_without_a_secret_is_one_line_before_touching_the_database(
    tmp_path: Path, env: dict[str, str]
) -> None:
    # Nothing listens on port 9: a server that tried to migrate first would fail there.
    env = {k: v for k, v in env.items() if k != "JWT_SECRET"}
    env |= {"DATABASE_URL": "postgresql://postgres@127.0.0.1:9/parley"}

    result = parley(tmp_path, env, "serve", "--port", "0")

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "parley: invalid setting JWT_SECRET: required when DATABASE_URL is PostgreSQL"
    ]


def test_a_bad_port_setting_is_one_line_naming_it(tmp_path: Path, env: dict[str, str]) -> None:
    result = parley(tmp_path, env | {"PORT": "eighty"}, "serve")

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "PORT" in lines[0]
    assert "Traceback" not in result.stderr


def test_several_workers_without_redis_are_refused(tmp_path: Path, env: dict[str, str]) -> None:
    result = parley(tmp_path, env, "serve", "--workers", "2")

    assert result.returncode == 2
    assert "REDIS_URL" in result.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_serve_answers_healthz_and_exits_cleanly_on_sigterm(
    tmp_path: Path, env: dict[str, str]
) -> None:
    port = _free_port()
    process = await asyncio.create_subprocess_exec(
        PARLEY,
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    log: list[str] = []
    try:
        async with asyncio.timeout(30):
            while "Application startup complete" not in (log[-1] if log else ""):
                line = (await process.stderr.readline()).decode()
                assert line, "the server exited before starting:\n" + "".join(log)
                log.append(line)
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{port}/healthz")
        assert response.status_code == 200
        assert response.json()["data"] == {"status": "ok"}

        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            rest = (await process.stderr.read()).decode()
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    # uvicorn re-raises the signal once it has shut down, so that the exit status says
    # what stopped it; the clean part is the completed shutdown before that.
    assert code in (0, -signal.SIGTERM), "".join(log) + rest
    assert "Application shutdown complete" in rest
    assert "Traceback" not in rest
