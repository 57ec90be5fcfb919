"""``parley budget show|set|clear``: a user's token and money budget, from the host.

The same rules as ``/v1/users/{id}/budget`` (an operator on the host is an admin).
Servers read a changed budget within a few seconds (``budgets.LIMITS_TTL_S``).
"""

from __future__ import annotations

import argparse
from typing import Any

import orjson

from db.engine import Database
from db.repositories import users as users_repo
from errors import NotFound


def add_budget_parser(commands: Any) -> None:
    budget = commands.add_parser("budget", help="show or change a user's budget")
    actions = budget.add_subparsers(dest="budget_command", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="the budget and what is left of it")
    show.add_argument("--email", required=True)
    show.set_defaults(handler=budget_command, change=None)
    change = actions.add_parser("set", help="override the defaults (BUDGET_*) for a user")
    change.add_argument("--email", required=True)
    change.add_argument("--tokens", type=_limit(int), help="tokens per period, or 'none'")
    change.add_argument("--usd", type=_limit(float), help="US dollars per period, or 'none'")
    change.add_argument("--period", choices=["day", "month"])
    change.set_defaults(handler=budget_command, change="set")
    clear = actions.add_parser("clear", help="back to the defaults")
    clear.add_argument("--email", required=True)
    clear.set_defaults(handler=budget_command, change="clear")


class _Unlimited:
    """``none`` on the command line: no limit."""


UNLIMITED = _Unlimited()


def _limit(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float | _Unlimited:
        if text.lower() in ("none", "unlimited"):
            return UNLIMITED
        value = kind(text)
        if value < 0 or (kind is int and value < 1):
            raise argparse.ArgumentTypeError("must be positive (or 'none')")
        return value

    return parse


def budget_command(args: argparse.Namespace) -> int:
    from server.cli.main import UsageError, _admin_settings, _run_with_database
    from server.metrics import Metrics
    from server.services.accounts import normalise_email
    from server.services.budgets import BudgetService

    settings = _admin_settings()
    email = normalise_email(args.email)
    changes: dict[str, Any] = {}
    if args.change == "set":
        for name, value in (("tokens_per_period", args.tokens), ("usd_per_period", args.usd)):
            if value is not None:
                changes[name] = None if value is UNLIMITED else value
        if args.period is not None:
            changes["period"] = args.period
        if not changes:
            raise UsageError("nothing to set: give --tokens, --usd or --period")

    async def run(database: Database) -> dict[str, Any]:
        async with database.read() as session:
            user = await users_repo.get_user_by_email(session, email)
        if user is None:
            raise NotFound(f"no user with email {email}")
        budgets = BudgetService(database, settings, Metrics())
        if args.change == "set":
            return await budgets.set_limits(None, user.id, changes)
        if args.change == "clear":
            return await budgets.clear_limits(None, user.id)
        return await budgets.describe(None, user.id)

    print(orjson.dumps(_run_with_database(settings, run), option=orjson.OPT_INDENT_2).decode())
    return 0
