"""``parley``: serve, migrate, create users, mint access tokens and set budgets.

Every command reads the same settings as the server (environment and ``.env``). A
bad setting is one line on stderr and exit status 2, never a traceback; a refused
operation (an email already taken, an unknown user) is one line and status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import math
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from db import migrate
from db.engine import Database
from db.repositories import users as users_repo
from errors import NotFound, ParleyError
from server.config import ConfigError, Settings, load_settings
from server.logging import configure_logging

APP_FACTORY = "server.app:create_app"
PASSWORD_ENV = "PARLEY_PASSWORD"
EXIT_REFUSED = 1
EXIT_CONFIG = 2
T = TypeVar("T")


class UsageError(Exception):
    """The command line asks for something that cannot work; one line for the operator."""


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["chat"]:
        # The terminal client parses its own options (see server/cli/chat.py).
        from server.cli.chat import main as chat_main

        return chat_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except (ConfigError, UsageError) as exc:
        print(f"parley: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ParleyError as exc:
        print(f"parley: {exc.message}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parley", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("chat", help="chat in a session from the terminal (parley chat -h)")

    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--host", help="address to bind (default: HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default: PORT or 8000)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (needs REDIS_URL)")
    serve.add_argument("--reload", action="store_true", help="restart on code changes (dev)")
    serve.set_defaults(handler=serve_command)

    mig = commands.add_parser("migrate", help="bring the database schema up to date")
    target = mig.add_mutually_exclusive_group()
    target.add_argument("--revision", default="head", help="upgrade to this revision (head)")
    target.add_argument("--downgrade", metavar="REV", help="downgrade to this revision")
    mig.set_defaults(handler=migrate_command)

    user = commands.add_parser("user", help="manage accounts")
    user_commands = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    create = user_commands.add_parser("create", help="create an account")
    create.add_argument("--email", required=True)
    create.add_argument("--name", required=True)
    create.add_argument("--password", help=f"default: ${PASSWORD_ENV}, else a prompt")
    create.add_argument("--admin", action="store_true", help="give the account the admin role")
    create.set_defaults(handler=user_create_command)

    token = commands.add_parser("token", help="print an access token for a user")
    token.add_argument("--email", required=True)
    token.add_argument("--ttl", type=int, help="lifetime in seconds (default: ACCESS_TOKEN_TTL_S)")
    token.set_defaults(handler=token_command)

    from server.cli.budget import add_budget_parser

    add_budget_parser(commands)
    return parser


def serve_command(args: argparse.Namespace) -> int:
    import uvicorn
    from uvicorn.supervisors import ChangeReload, Multiprocess

    from server.serving import uvicorn_config

    overrides: dict[str, Any] = {}
    if args.host is not None:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    settings = load_settings(**overrides)
    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    if args.workers > 1 and not settings.redis_url:
        raise UsageError("--workers > 1 needs REDIS_URL: workers share rooms through Redis")
    if args.workers > 1 and args.reload:
        raise UsageError("--reload runs one worker; drop --workers")
    configure_logging(settings.log_level, settings.log_json)
    # Before anything touches the database: a missing secret on PostgreSQL is one line,
    # not a traceback after the migrations ran.
    from server.bootstrap import resolve_jwt_secret

    resolve_jwt_secret(settings)
    config = uvicorn_config(
        APP_FACTORY,
        settings,
        factory=True,
        workers=args.workers,
        reload=args.reload,
        loop="auto",  # uvloop when installed; http: serving.py's guarded httptools protocol
        timeout_graceful_shutdown=math.ceil(settings.drain_timeout_s),
        ws_max_size=settings.max_frame_bytes,
    )
    server = uvicorn.Server(config)
    # What uvicorn.run does with a ready Config: one process, a reloader, or workers
    # sharing one listening socket.
    if config.should_reload:
        ChangeReload(config, target=server.run, sockets=[config.bind_socket()]).run()
    elif config.workers > 1:
        Multiprocess(config, sockets=[config.bind_socket()]).run()
    else:
        server.run()
    return 0 if server.started or config.should_reload or config.workers > 1 else 1


def migrate_command(args: argparse.Namespace) -> int:
    settings = _admin_settings()

    async def run(database: Database) -> str | None:
        if args.downgrade:
            await migrate.downgrade(database, args.downgrade)
        else:
            await migrate.upgrade(database, args.revision)
        return await migrate.current_revision(database)

    revision = _run_with_database(settings, run, migrate_first=False, create=True)
    print(f"database at revision {revision or 'base'}")
    return 0


def user_create_command(args: argparse.Namespace) -> int:
    from server.security.passwords import hash_password
    from server.services.accounts import normalise_email

    settings = _admin_settings()
    password = args.password or os.environ.get(PASSWORD_ENV) or _prompt_password()
    if len(password) < 8:
        raise UsageError("the password must be at least 8 characters")
    email = normalise_email(args.email)

    async def run(database: Database) -> str:
        password_hash = await hash_password(password)
        async with database.transaction() as session:
            user = await users_repo.create_user(
                session,
                email=email,
                name=args.name,
                password_hash=password_hash,
                role="admin" if args.admin else "user",
            )
        return f"{user.id} {user.email} {user.role}"

    print(_run_with_database(settings, run))
    return 0


def token_command(args: argparse.Namespace) -> int:
    from server.bootstrap import resolve_jwt_secret
    from server.security.tokens import TokenService
    from server.services.accounts import normalise_email

    settings = _admin_settings()
    if args.ttl is not None and args.ttl < 1:
        raise UsageError("--ttl must be a positive number of seconds")
    tokens = TokenService(
        secret=resolve_jwt_secret(settings),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        access_ttl_s=settings.access_token_ttl_s,
        leeway_s=settings.jwt_leeway_s,
    )
    email = normalise_email(args.email)

    async def run(database: Database) -> str:
        async with database.transaction() as session:
            user = await users_repo.get_user_by_email(session, email)
        if user is None:
            raise NotFound(f"no user with email {email}")
        if user.disabled:
            raise NotFound(f"the account {email} is disabled")
        token, _ = tokens.issue_access_token(
            user.id, role=user.role, name=user.name, ttl_s=args.ttl
        )
        return token

    print(_run_with_database(settings, run))
    return 0


def _admin_settings() -> Settings:
    settings = load_settings()
    # Admin commands talk on stdout; only warnings and worse go to stderr.
    configure_logging("WARNING", json=False)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return settings


def _run_with_database(
    settings: Settings,
    work: Callable[[Database], Coroutine[Any, Any, T]],
    *,
    migrate_first: bool = True,
    create: bool = False,
) -> T:
    """Runs ``work`` against the configured database.

    Only ``migrate`` (``create``) may bring a new SQLite file into being: a user command
    run from the wrong folder used to create an empty database there and put the
    account in it, where no server would ever find it.
    """
    if sys.stderr.isatty():
        print(f"parley: database {describe_database(settings)}", file=sys.stderr)
    sqlite_file = sqlite_path(settings)
    if not create and sqlite_file is not None and not sqlite_file.exists():
        raise UsageError(
            f"no database at {sqlite_file}: run this where the server runs, set "
            "DATABASE_URL, or create it with `parley migrate`"
        )

    async def run() -> T:
        database = Database(settings.database_url, pool_size=2)
        try:
            if migrate_first and settings.migrate_on_start:
                await migrate.upgrade(database)
            return await work(database)
        finally:
            await database.dispose()

    return asyncio.run(run())


def describe_database(settings: Settings) -> str:
    """The database URL as an operator may see it: no password."""
    from sqlalchemy.engine import make_url

    path = sqlite_path(settings)
    if path is not None:
        return f"SQLite file {path}"
    return make_url(settings.database_url).render_as_string(hide_password=True)


def sqlite_path(settings: Settings) -> Path | None:
    """The absolute path of the SQLite file, or None for PostgreSQL and in-memory SQLite."""
    from sqlalchemy.engine import make_url

    if not settings.is_sqlite:
        return None
    database = make_url(settings.database_url).database
    if not database or database == ":memory:":
        return None
    return Path(database).resolve()


def _prompt_password() -> str:
    if not sys.stdin.isatty():
        raise UsageError(f"no password: pass --password or set {PASSWORD_ENV}")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise UsageError("the passwords differ")
    return first
