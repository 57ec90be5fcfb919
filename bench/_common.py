"""What the realtime benchmarks share: real ``parley serve`` processes, a seeded room,
the Node.js load client, CPU and memory readings from ``/proc``, the report writer.

Everything listens on 127.0.0.1. Databases are fresh per run (a SQLite file in a
temporary directory, or a new PostgreSQL database dropped afterwards), and Redis keys
carry a per-run prefix, so runs never see each other's data.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson

from db import migrate
from db.engine import Database
from db.repositories import sessions as sessions_repo
from db.repositories import users as users_repo
from server.security.tokens import TokenService

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "docs" / "benchmarks.md"
NODE_DIR = ROOT / "bench" / "node"
SECRET = "bench-secret-" + "b" * 40
POSTGRES_URL = os.environ.get(
    "PARLEY_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("PARLEY_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
FD_LIMIT = 20_000


def raise_fd_limit(wanted: int = FD_LIMIT) -> None:
    """Lift the soft open-files limit towards ``wanted`` (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(wanted, hard) if hard != resource.RLIM_INFINITY else wanted
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# /proc readings -------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE


@dataclass
class CpuWindow:
    """CPU used by some processes over a wall-clock window, as a share of one core."""

    pids: dict[str, int]
    started: float = field(default_factory=time.perf_counter)
    before: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def percent(self) -> dict[str, float]:
        elapsed = time.perf_counter() - self.started
        return {
            name: 100 * (cpu_seconds(pid) - self.before[name]) / elapsed
            for name, pid in self.pids.items()
        }


# Server processes ----------------------------------------------------------------------


class ServerNode:
    """One ``parley serve`` process on a free loopback port."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.env = env
        self.port = free_port()
        self.log_path = log_dir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self, timeout_s: float = 30.0) -> None:
        self.process = self._spawn()
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient() as client:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited: {self.log_path.read_text()[-2000:]}")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(self.http_url + "/healthz")).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.name} did not start: {self.log_path.read_text()}")
                await asyncio.sleep(0.1)

    def _spawn(self) -> subprocess.Popen[bytes]:
        raise_fd_limit()  # inherited by the server
        command = [str(Path(sys.executable).parent / "parley"), "serve", "--host", "127.0.0.1"]
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                [*command, "--port", str(self.port)],
                cwd=ROOT,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)


def server_env(database_url: str, redis_url: str | None, **extra: str) -> dict[str, str]:
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url or "",
        "JWT_SECRET": SECRET,
        "ACCESS_TOKEN_TTL_S": "3600",
        "LOG_JSON": "false",
        "LOG_LEVEL": "WARNING",
        "DRAIN_TIMEOUT_S": "1",
        "OPENROUTER_API_KEY": "",
        # Every load client connects from 127.0.0.1: no cap on sockets per address.
        "MAX_CONNECTIONS_PER_IP": "0",
    }
    env.update(extra)
    if not env["OPENROUTER_API_KEY"]:
        del env["OPENROUTER_API_KEY"]
    return env


# Databases and a seeded room -----------------------------------------------------------


@contextlib.asynccontextmanager
async def fresh_database(
    kind: str, workdir: Path, *, code: Path | None = None
) -> AsyncIterator[str]:
    """A migrated, empty database: ``sqlite`` (a file) or ``postgresql`` (dropped after).

    ``code``: migrate with that checkout's migrations (an A/B baseline), not this one's:
    a server refuses a database at a revision it does not know."""
    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
        await _migrate(url, code)
        yield url
        return
    name = f"parley_bench_{uuid.uuid4().hex[:8]}"
    admin_url = POSTGRES_URL.replace("postgresql+asyncpg", "postgresql")
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    try:
        await _migrate(url, code)
        yield url
    finally:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


async def _migrate(url: str, code: Path | None = None) -> None:
    if code is not None:
        env = {**os.environ, "PYTHONPATH": str(code), "DATABASE_URL": url}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "import sys; from server.cli.main import main; sys.exit(main(['migrate']))",
            env=env,
            cwd=code,
        )
        if await process.wait() != 0:
            raise RuntimeError(f"migrating with {code} failed")
        return
    database = Database(url, pool_size=2)
    try:
        await migrate.upgrade(database)
    finally:
        await database.dispose()


@dataclass
class Room:
    session_id: str
    tokens: list[str]  # one access token per member, the owner first


async def seed_room(
    database_url: str, members: int, *, extra_users: int = 0, prefix: str = "u"
) -> Room:
    """One session with ``members`` members (each its own user), plus ``extra_users``
    users who are in no room (idle connections). Tokens last an hour. Users are named
    ``{prefix}{n}``: another ``prefix`` seeds another room in the same database."""
    tokens = TokenService(
        secret=SECRET, issuer="parley", audience="parley", access_ttl_s=3600, leeway_s=10
    )
    database = Database(database_url, pool_size=2)
    minted: list[str] = []
    try:
        async with database.transaction() as session:
            users = []
            for n in range(members + extra_users):
                users.append(
                    await users_repo.create_user(
                        session,
                        email=f"{prefix}{n}@bench.example",
                        name=f"{prefix}{n}",
                        password_hash=None,
                    )
                )
            chat = await sessions_repo.create_session(
                session, owner_id=users[0].id, title="bench", model=None, system_prompt=None
            )
            for user in users[1:members]:
                await sessions_repo.add_member(session, chat.id, user.id)
        for user in users:
            minted.append(tokens.issue_access_token(user.id, role=user.role, name=user.name)[0])
    finally:
        await database.dispose()
    return Room(session_id=str(chat.id), tokens=minted)


# The Node.js load client ---------------------------------------------------------------


def node_available() -> bool:
    return shutil.which("node") is not None and (NODE_DIR / "node_modules" / "ws").exists()


def ensure_node_client() -> None:
    if shutil.which("node") is None:
        raise SystemExit("node is not installed: the receivers are a Node.js client")
    if not (NODE_DIR / "node_modules" / "ws").exists():
        subprocess.run(["npm", "ci", "--silent"], cwd=NODE_DIR, check=True)


class NodeClient:
    """``bench/node/client.js``: commands as JSON lines on stdin, one JSON reply each."""

    def __init__(self) -> None:
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        ensure_node_client()
        raise_fd_limit()
        self.process = await asyncio.create_subprocess_exec(
            "node",
            "--max-old-space-size=2048",
            str(NODE_DIR / "client.js"),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=64 * 1024 * 1024,
        )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def call(self, timeout_s: float = 300.0, **command: Any) -> dict[str, Any]:
        assert self.process is not None and self.process.stdin and self.process.stdout
        self.process.stdin.write(orjson.dumps(command) + b"\n")
        await self.process.stdin.drain()
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout_s)
        if not line:
            raise RuntimeError("the node client exited")
        reply: dict[str, Any] = orjson.loads(line)
        if "error" in reply:
            raise RuntimeError(f"node client: {reply['error']}")
        return reply

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        with contextlib.suppress(Exception):
            await self.call(timeout_s=10, cmd="quit")
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        await self.process.wait()


# The report ----------------------------------------------------------------------------


def machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{platform.machine()}, {os.cpu_count()} cores ({cpu}) shared by the server(s) and the"
        f" load generator, Python {platform.python_version()}, Node"
        f" {subprocess.run(['node', '--version'], capture_output=True, text=True).stdout.strip()}"
    )


def write_section(title: str, body: str, report: Path = REPORT) -> None:
    """Replace (or append) the section headed ``title``; other sections stay as they are."""
    section = f"{title}\n\n{body.strip()}\n"
    existing = report.read_text() if report.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(existing):
        updated = pattern.sub(lambda _: section + "\n", existing)
    else:
        updated = existing.rstrip("\n") + "\n\n" + section
    report.write_text(updated.rstrip("\n") + "\n")


# The command line every room benchmark shares ---------------------------------------


def bench_main(
    doc: str,
    *,
    title: str,
    results: Path,
    notes: Path,
    render: Callable[[dict[str, Any]], str],
    run: Callable[[argparse.Namespace, str, Path], Coroutine[Any, Any, dict[str, Any]]],
    arguments: Callable[[argparse.ArgumentParser], None] = lambda _: None,
) -> None:
    """Parse the common options (``--databases``, ``--report``, ``--render-only``
    and the benchmark's own), ``run`` it once per database in a scratch directory,
    keep the results as JSON and rewrite the report's section with ``render`` and
    the notes file."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    arguments(parser)
    parser.add_argument(
        "--databases", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql"
    )
    parser.add_argument("--report", type=Path, default=REPORT, help="the file to update")
    parser.add_argument(
        "--render-only", action="store_true", help="rewrite the section from the last results"
    )
    args = parser.parse_args()
    result: dict[str, Any]
    if args.render_only:
        result = json.loads(results.read_text())
    else:
        runs = []
        for database in args.databases.split(","):
            with tempfile.TemporaryDirectory(prefix=f"parley-{results.stem}-") as tmp:
                runs.append(asyncio.run(run(args, database, Path(tmp))))
        result = {"runs": runs, "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"}
        result["machine"] = machine()
        result["load"] = " ".join(f"{n:.2f}" for n in os.getloadavg())
        results.parent.mkdir(parents=True, exist_ok=True)
        results.write_text(json.dumps(result, indent=1))
    body = render(result)
    if notes.exists():
        body += "\n\n" + notes.read_text().strip()
    write_section(title, body, args.report)
    print(body)
