"""Token and money budgets per user, and the spend every model request adds to them.

Who pays is the member who asked, or with ``BUDGET_PAYER=owner`` the room's owner (then
an owner's budget covers every answer in their rooms, whoever asks).

The budget of a user is an admin's override (``user_budgets``) or the defaults
(``BUDGET_PERIOD``, ``BUDGET_TOKENS_PER_PERIOD``, ``BUDGET_USD_PER_PERIOD``); unset is
unlimited. A period starts at 00:00 UTC (day) or on the 1st of the month.

This is the ``llm.metering.Meter`` of every upstream: ``admit`` refuses a request once
the period's budget is spent, or when its prompt alone would overrun it, and lowers its
``max_tokens`` to what is left; ``record`` counts what it cost. Spend is written by one
background task in batches, off the answer's path; until it is written it is held in
memory (``_pending``), so that this node's next check already sees it. Crossing 80 % of
a budget, and spending it, sends the user a ``budget`` frame (``notify``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cachetools import TTLCache

from db.engine import Database
from db.repositories import sessions as sessions_repo
from db.repositories import spend as spend_repo
from db.repositories import users as users_repo
from errors import BadRequest, BudgetExceeded, Forbidden, NotFound, ParleyError
from llm.metering import Payer, Price, Spend
from server.config import Settings
from server.metrics import Metrics
from server.services.accounts import Principal

log = logging.getLogger("parley.budgets")

NANO = 1_000_000_000
WARN_AT = 0.8
LIMITS_TTL_S = 5.0
SPEND_TTL_S = 2.0
# Fewer completion tokens than this left is no answer at all: refused instead.
MIN_COMPLETION_TOKENS = 16
# Rooms whose owner this node remembers (BUDGET_PAYER=owner); an owner never changes.
OWNERS_CACHED = 10_000
# Users whose limits and spend are kept between reads: bounded, or every user who ever
# connected would stay in memory (the welcome frame reads each one's budget).
BUDGETS_CACHED = 4096
# Users with a budget of their own that this node lists (so that everyone else's
# limits are the defaults without a read); with more, each user's row is read.
OVERRIDES_LISTED = 10_000
Notify = Callable[[str, dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Limits:
    tokens: int | None
    nano_usd: int | None
    period: str
    overridden: bool

    @property
    def unlimited(self) -> bool:
        return self.tokens is None and self.nano_usd is None

    def to_wire(self) -> dict[str, Any]:
        return {
            "period": self.period,
            "tokens_per_period": self.tokens,
            "usd_per_period": None if self.nano_usd is None else self.nano_usd / NANO,
            "overridden": self.overridden,
        }


def period_bounds(period: str, now: datetime) -> tuple[datetime, datetime]:
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day, day + timedelta(days=1)
    start = day.replace(day=1)
    following = (start + timedelta(days=32)).replace(day=1)
    return start, following


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class BudgetStatus:
    limits: Limits
    tokens_used: int
    nano_usd_used: int
    starts_at: datetime
    resets_at: datetime

    @property
    def tokens_left(self) -> int | None:
        return None if self.limits.tokens is None else max(0, self.limits.tokens - self.tokens_used)

    @property
    def nano_usd_left(self) -> int | None:
        limit = self.limits.nano_usd
        return None if limit is None else max(0, limit - self.nano_usd_used)

    @property
    def fraction(self) -> float:
        """The larger share spent of the two budgets (0 when unlimited)."""
        shares = [0.0]
        if self.limits.tokens is not None:
            shares.append(self.tokens_used / self.limits.tokens if self.limits.tokens else 1.0)
        if self.limits.nano_usd is not None:
            shares.append(
                self.nano_usd_used / self.limits.nano_usd if self.limits.nano_usd else 1.0
            )
        return max(shares)

    @property
    def exhausted(self) -> bool:
        return self.tokens_left == 0 or self.nano_usd_left == 0

    def to_wire(self) -> dict[str, Any]:
        left = self.nano_usd_left
        return {
            "period": self.limits.period,
            "resets_at": _iso(self.resets_at),
            "tokens": {
                "limit": self.limits.tokens,
                "used": self.tokens_used,
                "left": self.tokens_left,
            },
            "usd": {
                "limit": None if self.limits.nano_usd is None else self.limits.nano_usd / NANO,
                "used": self.nano_usd_used / NANO,
                "left": None if left is None else left / NANO,
            },
            "exhausted": self.exhausted,
        }

    def refusal(self, why: str) -> BudgetExceeded:
        wait = max(0.0, (self.resets_at - datetime.now(UTC)).total_seconds())
        return BudgetExceeded(
            f"{why}; it renews at {_iso(self.resets_at)}",
            resets_at=_iso(self.resets_at),
            retry_after=wait,
        )


class BudgetService:
    def __init__(self, database: Database, settings: Settings, metrics: Metrics) -> None:
        self._db = database
        self._settings = settings
        self._metrics = metrics
        self.notify: Notify | None = None
        self._limits: TTLCache[uuid.UUID, tuple[float, Limits]] = TTLCache(
            BUDGETS_CACHED, LIMITS_TTL_S
        )
        self._pending: dict[uuid.UUID, list[int]] = {}
        self._queue: list[spend_repo.SpendRow] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._warned: dict[uuid.UUID, tuple[datetime, str]] = {}
        self._writer: asyncio.Task[None] | None = None
        self._owners: dict[uuid.UUID, uuid.UUID] = {}
        # (read again after, the users with a budget of their own, None: too many to
        # list). A user not among them has the defaults without a read of their row;
        # with unlimited defaults, no budget applies and neither limits nor spend is
        # read (every welcome frame read both).
        self._overridden: tuple[float, set[uuid.UUID] | None] = (0.0, None)
        # Per payer: (read again after, period start, [tokens, nano_usd] stored).
        self._spent: TTLCache[uuid.UUID, tuple[float, datetime, list[int]]] = TTLCache(
            BUDGETS_CACHED, SPEND_TTL_S
        )

    # Who pays -----------------------------------------------------------------------------

    async def payer_of(self, user_id: uuid.UUID, session_id: uuid.UUID | None) -> uuid.UUID:
        """Whose budget a request asked by ``user_id`` in ``session_id`` counts against."""
        if self._settings.budget_payer != "owner" or session_id is None:
            return user_id
        owner = self._owners.get(session_id)
        if owner is None:
            async with self._db.read() as session:
                chat = await sessions_repo.get_session(session, session_id)
            if chat is None:
                return user_id
            if len(self._owners) >= OWNERS_CACHED:
                self._owners.clear()
            owner = self._owners[session_id] = chat.owner_id
        return owner

    def _known_payer(self, payer: Payer) -> uuid.UUID | None:
        """``payer_of`` without a database read: ``admit`` looked the owner up first."""
        if payer.user_id is None or self._settings.budget_payer != "owner":
            return payer.user_id
        if payer.session_id is None:
            return payer.user_id
        return self._owners.get(payer.session_id, payer.user_id)

    def _why(self, payer_id: uuid.UUID, user_id: uuid.UUID) -> str:
        whose = "your" if payer_id == user_id else "the room owner's"
        return f"{whose} budget for this period is spent"

    # Limits and status ------------------------------------------------------------------

    def defaults(self) -> Limits:
        usd = self._settings.budget_usd_per_period
        return Limits(
            tokens=self._settings.budget_tokens_per_period,
            nano_usd=None if usd is None else round(usd * NANO),
            period=self._settings.budget_period,
            overridden=False,
        )

    async def limits(self, user_id: uuid.UUID, *, fresh: bool = False) -> Limits:
        """The user's limits; ``fresh`` reads their row whatever this node knows (an
        admin's view, a change)."""
        cached = None if fresh else self._limits.get(user_id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        defaults = self.defaults()
        overridden = None if fresh else await self._overridden_users()
        if overridden is not None and user_id not in overridden:
            return defaults  # the set is the cache: nothing kept per user
        async with self._db.read() as session:
            row = await spend_repo.get_budget(session, user_id)
        listed = self._overridden[1]
        if row is not None and listed is not None:
            listed.add(user_id)  # made elsewhere since this node listed them
        limits = (
            defaults
            if row is None
            else Limits(row.tokens_per_period, row.nano_usd_per_period, row.period, True)
        )
        self._limits[user_id] = (time.monotonic() + LIMITS_TTL_S, limits)
        return limits

    async def _overridden_users(self) -> set[uuid.UUID] | None:
        """The users with a budget of their own: one read per node every
        ``LIMITS_TTL_S``, so an override made on another node (or by ``parley
        budget``) applies here as late as a changed one already did."""
        until, known = self._overridden
        if until > time.monotonic():
            return known
        async with self._db.read() as session:
            known = await spend_repo.budget_owners(session, OVERRIDES_LISTED)
        self._overridden = (time.monotonic() + LIMITS_TTL_S, known)
        return known

    async def status(
        self, user_id: uuid.UUID, limits: Limits | None = None, *, fresh: bool = False
    ) -> BudgetStatus:
        """The period's spend against the limits. What the database said is kept for
        ``SPEND_TTL_S`` (the question's check and its request's admission then read it
        once), plus what this node stored since and what it has yet to store; only
        other nodes' spend can be that much late."""
        limits = limits or await self.limits(user_id)
        starts, resets = period_bounds(limits.period, datetime.now(UTC))
        cached = self._spent.get(user_id)
        if fresh or cached is None or cached[0] < time.monotonic() or cached[1] != starts:
            async with self._db.read() as session:
                total = await spend_repo.spent_since(session, user_id, starts)
            cached = (time.monotonic() + SPEND_TTL_S, starts, [total.tokens, total.nano_usd])
            self._spent[user_id] = cached
        spent = cached[2]
        pending = self._pending.get(user_id, [0, 0])
        return BudgetStatus(limits, spent[0] + pending[0], spent[1] + pending[1], starts, resets)

    async def left(self, user_id: uuid.UUID) -> dict[str, Any] | None:
        """What the ``welcome`` frame shows: the status, or None when unlimited."""
        limits = await self.limits(user_id)
        return None if limits.unlimited else (await self.status(user_id, limits)).to_wire()

    async def usage(self, user_id: uuid.UUID) -> dict[str, Any]:
        """``GET /v1/me/usage``: the budget and the period's spend by kind and model."""
        limits = await self.limits(user_id)
        status = await self.status(user_id, limits)
        async with self._db.read() as session:
            lines = await spend_repo.spend_lines(session, user_id, status.starts_at)
        return {
            "budget": status.to_wire(),
            "limits": limits.to_wire(),
            "since": _iso(status.starts_at),
            "spend": [
                {
                    "kind": line.kind,
                    "model": line.model,
                    "calls": line.calls,
                    "prompt_tokens": line.prompt_tokens,
                    "completion_tokens": line.completion_tokens,
                    "usd": line.nano_usd / NANO,
                }
                for line in lines
            ],
        }

    # The meter --------------------------------------------------------------------------

    async def check(self, user_id: uuid.UUID, session_id: uuid.UUID | None = None) -> None:
        """Before a question is stored: refuse it when the budget is already spent."""
        payer_id = await self.payer_of(user_id, session_id)
        limits = await self.limits(payer_id)
        if limits.unlimited:
            return
        status = await self.status(payer_id, limits)
        if status.exhausted:
            self._metrics.budget_refusals.labels("spent").inc()
            raise status.refusal(self._why(payer_id, user_id))

    async def admit(
        self,
        payer: Payer | None,
        prompt_tokens: Callable[[], int],
        max_tokens: int | None,
        price: Price | None,
    ) -> int | None:
        if payer is None or payer.user_id is None:
            return max_tokens
        payer_id = await self.payer_of(payer.user_id, payer.session_id)
        limits = await self.limits(payer_id)
        if limits.unlimited:
            return max_tokens
        status = await self.status(payer_id, limits)
        if status.exhausted:
            self._metrics.budget_refusals.labels("spent").inc()
            raise status.refusal(self._why(payer_id, payer.user_id))
        prompt = prompt_tokens()
        allowed = max_tokens
        rooms: list[int] = []
        if status.tokens_left is not None:
            rooms.append(status.tokens_left - prompt)
        left = status.nano_usd_left
        if left is not None and price is not None:
            after_prompt = left - price.prompt_usd * prompt * NANO
            per_token = price.completion_usd * NANO
            rooms.append(int(after_prompt / per_token) if per_token > 0 else int(after_prompt))
        for room in rooms:
            if room < MIN_COMPLETION_TOKENS:
                self._metrics.budget_refusals.labels("projected").inc()
                whose = "your" if payer_id == payer.user_id else "the room owner's"
                raise status.refusal(f"this request would overrun {whose} budget for this period")
            allowed = room if allowed is None else min(allowed, room)
        return allowed

    def record(self, spend: Spend) -> None:
        usage = spend.usage
        self._metrics.spend_tokens.labels(spend.model, spend.kind, "prompt").inc(
            usage.prompt_tokens
        )
        self._metrics.spend_tokens.labels(spend.model, spend.kind, "completion").inc(
            usage.completion_tokens
        )
        self._metrics.spend_usd.labels(spend.model).inc(spend.nano_usd / NANO)
        payer = spend.payer or Payer(None)
        payer_id = self._known_payer(payer)
        self._queue.append(
            spend_repo.SpendRow(
                user_id=payer.user_id,
                payer_id=payer_id,
                session_id=payer.session_id,
                kind=spend.kind,
                model=spend.model[:200],
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                cost_nano_usd=spend.nano_usd,
                estimated=spend.estimated,
            )
        )
        if payer_id is not None:
            pending = self._pending.setdefault(payer_id, [0, 0])
            pending[0] += usage.total_tokens
            pending[1] += spend.nano_usd
        self._idle.clear()
        self._wake.set()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_loop(), name="spend-writer")

    async def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until every recorded spend is stored (tests, shutdown)."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            log.warning("%d spend events not stored", len(self._queue))

    async def aclose(self, timeout_s: float = 5.0) -> None:
        await self.flush(timeout_s)
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)

    async def _write_loop(self) -> None:
        delay = 0.5
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    async with self._db.transaction() as session:
                        await spend_repo.record_spend(session, batch)
                except ParleyError as exc:
                    log.warning("storing %d spend events failed: %s", len(batch), exc.message)
                    self._queue[:0] = batch
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)
                    continue
                except Exception:
                    # Not an outage: storing them again would fail again.
                    log.exception("storing %d spend events failed; dropped", len(batch))
                    self._forget_pending(batch, stored=False)
                    continue
                delay = 0.5
                self._forget_pending(batch, stored=True)
                for payer_id in {row.payer_id for row in batch if row.payer_id is not None}:
                    await self._maybe_warn(payer_id)
            if not self._queue:
                self._idle.set()

    def _forget_pending(self, batch: list[spend_repo.SpendRow], *, stored: bool) -> None:
        for row in batch:
            if row.payer_id is None:
                continue
            # Stored now: what was pending moves to what the database holds.
            known = self._spent.get(row.payer_id) if stored else None
            if known is not None:
                known[2][0] += row.prompt_tokens + row.completion_tokens
                known[2][1] += row.cost_nano_usd
            pending = self._pending.get(row.payer_id)
            if pending is not None:
                pending[0] -= row.prompt_tokens + row.completion_tokens
                pending[1] -= row.cost_nano_usd
                if pending == [0, 0]:
                    del self._pending[row.payer_id]

    async def _maybe_warn(self, user_id: uuid.UUID) -> None:
        if self.notify is None:
            return
        try:
            limits = await self.limits(user_id)
            if limits.unlimited:
                return
            status = await self.status(user_id, limits)
            level = (
                "exhausted"
                if status.exhausted
                else "warning"
                if status.fraction >= WARN_AT
                else None
            )
            if level is None:
                return
            told = self._warned.get(user_id)
            if (
                told is not None
                and told[0] == status.starts_at
                and (told[1] == level or told[1] == "exhausted")
            ):
                return
            self._warned[user_id] = (status.starts_at, level)
            await self.notify(
                str(user_id), {"type": "budget", "level": level, "budget": status.to_wire()}
            )
        except ParleyError as exc:
            log.warning("budget warning for %s failed: %s", user_id, exc.message)

    # Admin ------------------------------------------------------------------------------

    async def _known_user(self, principal: Principal | None, user_id: uuid.UUID) -> None:
        if principal is not None and not principal.is_admin:
            raise Forbidden("only an admin may see or change another user's budget")
        async with self._db.read() as session:
            if await users_repo.get_user(session, user_id) is None:
                raise NotFound("user not found")

    async def describe(self, principal: Principal | None, user_id: uuid.UUID) -> dict[str, Any]:
        """An admin's view (``principal`` None: the CLI, an operator on the host)."""
        await self._known_user(principal, user_id)
        limits = await self.limits(user_id, fresh=True)
        status = await self.status(user_id, limits, fresh=True)
        return {"user_id": str(user_id), "limits": limits.to_wire(), "budget": status.to_wire()}

    async def set_limits(
        self,
        principal: Principal | None,
        user_id: uuid.UUID,
        changes: dict[str, Any],
    ) -> dict[str, Any]:
        """Override the user's budget; fields not given keep their current value."""
        await self._known_user(principal, user_id)
        current = await self.limits(user_id, fresh=True)
        tokens = changes.get("tokens_per_period", current.tokens)
        usd = changes.get("usd_per_period")
        nano = round(usd * NANO) if "usd_per_period" in changes and usd is not None else None
        if "usd_per_period" not in changes:
            nano = current.nano_usd
        period = changes.get("period", current.period)
        if period not in ("day", "month"):
            raise BadRequest('period must be "day" or "month"', details={"field": "period"})
        async with self._db.transaction() as session:
            await spend_repo.set_budget(
                session,
                user_id,
                tokens_per_period=tokens,
                nano_usd_per_period=nano,
                period=period,
            )
        listed = self._overridden[1]
        if listed is not None:
            listed.add(user_id)  # this node knows at once; others within LIMITS_TTL_S
        self._limits.pop(user_id, None)
        self._warned.pop(user_id, None)
        return await self.describe(principal, user_id)

    async def clear_limits(self, principal: Principal | None, user_id: uuid.UUID) -> dict[str, Any]:
        await self._known_user(principal, user_id)
        async with self._db.transaction() as session:
            await spend_repo.clear_budget(session, user_id)
        self._limits.pop(user_id, None)
        self._warned.pop(user_id, None)
        return await self.describe(principal, user_id)
