"""The async engine and transactions, for SQLite (aiosqlite) and PostgreSQL (asyncpg)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool

from errors import Unavailable

log = logging.getLogger(__name__)

# A pooled PostgreSQL connection idle this long is pinged before use (see
# ``_ping_when_idle``).
PING_AFTER_IDLE_S = 10.0

# Bounded waits (server/config.py: DB_CONNECT_TIMEOUT_S, DB_STATEMENT_TIMEOUT_S,
# DB_POOL_TIMEOUT_S, DB_RETRY_AFTER_S). Without them a partition held a request for
# the kernel's TCP timeouts (minutes), and every later frame of its connection behind it.
CONNECT_TIMEOUT_S = 5.0
STATEMENT_TIMEOUT_S = 10.0
POOL_TIMEOUT_S = 5.0
RETRY_AFTER_S = 5.0


class Database:
    """Owns the engine; ``transaction()`` is the unit of work every repository runs in."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        echo: bool = False,
        ping_after_idle_s: float = PING_AFTER_IDLE_S,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        statement_timeout_s: float = STATEMENT_TIMEOUT_S,
        pool_timeout_s: float = POOL_TIMEOUT_S,
        retry_after_s: float = RETRY_AFTER_S,
    ) -> None:
        self.url = url
        self.dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
        self.retry_after_s = retry_after_s
        self._connect_timeout_s = connect_timeout_s
        # A checkout waits this long for a free connection (the pool is exhausted).
        kwargs: dict[str, Any] = {"echo": echo, "pool_timeout": pool_timeout_s}
        if self.dialect == "postgresql":
            kwargs |= {
                "pool_size": pool_size,
                "max_overflow": pool_size,
                "connect_args": {
                    # asyncpg's own bounds: opening a connection (TCP and startup), and
                    # each statement, COMMIT and ROLLBACK included. Client side, so
                    # they hold in a partition too, when the server cannot answer.
                    "timeout": connect_timeout_s,
                    "command_timeout": statement_timeout_s,
                },
            }
        else:
            # Reset by ``_configure_sqlite``'s listener, only when a transaction is open.
            # The busy timeout (a writer of another process holds the lock) is the
            # statement timeout here.
            kwargs |= {
                "connect_args": {"timeout": statement_timeout_s},
                "pool_reset_on_return": None,
            }
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.dialect == "sqlite":
            _configure_sqlite(self.engine, busy_timeout_ms=round(statement_timeout_s * 1000))
        else:
            _ping_when_idle(self.engine, ping_after_idle_s)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._writers = asyncio.Lock() if self.dialect == "sqlite" else None
        self._closing: set[asyncio.Task[None]] = set()
        # Same pool; its transactions start with a plain BEGIN on SQLite (see below).
        self._read_sessions = async_sessionmaker(
            self.engine.execution_options(parley_read_only=True), expire_on_commit=False
        )
        # One statement, atomic on its own: PostgreSQL's autocommit; on SQLite the
        # connection is in autocommit already (see below) and this skips our BEGIN.
        single = {"isolation_level": "AUTOCOMMIT"} if self.dialect == "postgresql" else {}
        self._autocommit_sessions = async_sessionmaker(
            self.engine.execution_options(parley_single_statement=True, **single),
            expire_on_commit=False,
        )

    @property
    def in_process(self) -> bool:
        """Whether the database's work runs in this process (SQLite: on the event loop
        and aiosqlite's thread) rather than in a server of its own (PostgreSQL)."""
        return self.dialect == "sqlite"

    def transaction(self) -> AbstractAsyncContextManager[AsyncSession]:
        """A session inside one transaction: committed on success, rolled back on error."""
        if self._writers is not None:
            return self._queued_write()
        return _unit_of_work(self.sessions, self.retry_after_s)

    @asynccontextmanager
    async def _queued_write(self) -> AsyncIterator[AsyncSession]:
        # SQLite has one writer at a time. Writers of this process queue here, in order
        # and without sleeping; left to SQLite's busy handler they would poll with
        # sleeps of up to 100 ms, and a busy room's latency went to seconds.
        assert self._writers is not None
        async with self._writers, _unit_of_work(self.sessions, self.retry_after_s) as session:
            yield session

    def single_statement(self) -> AbstractAsyncContextManager[AsyncSession]:
        """For a unit of work that is one statement (atomic on its own): no BEGIN or
        COMMIT around it, which saves their round trips on PostgreSQL and their trips
        to aiosqlite's thread on SQLite, where it still queues behind this process's
        other writers. Each statement run in the block is its own transaction, done
        when it returns; on SQLite the session is closed (its connection given back)
        after the block, in the background."""
        if self._writers is not None:
            return self._queued_single_statement()
        return _unit_of_work(self._autocommit_sessions, self.retry_after_s)

    @asynccontextmanager
    async def _queued_single_statement(self) -> AsyncIterator[AsyncSession]:
        assert self._writers is not None
        async with self._writers:
            session = self._autocommit_sessions()
            try:
                with _unavailable_when_cut(self.retry_after_s):
                    await session.begin()
                    yield session
            except BaseException:
                await session.close()
                raise
        # What the block wrote is committed already, but closing the session is a
        # no-op COMMIT, a trip to aiosqlite's thread: 0.4-0.7 ms on a busy loop in front
        # of the caller's next step (a question's store is awaited by its answer's
        # first token). It runs in the background. (On PostgreSQL, where closing is
        # work on this loop only, doing the same measured worse.)
        task = asyncio.create_task(_close_quietly(session))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def read(self) -> AbstractAsyncContextManager[AsyncSession]:
        """A transaction for reads only: on SQLite it does not take the write lock, so
        reads run beside each other and beside a writer (WAL) instead of queueing."""
        return _unit_of_work(self._read_sessions, self.retry_after_s)

    @asynccontextmanager
    async def unbounded(self) -> AsyncIterator[AsyncConnection]:
        """A transaction without the statement timeout, for migrations: one may wait
        on the lock while another node migrates, or build an index for minutes."""
        if self.dialect == "sqlite":
            async with self.engine.begin() as conn:
                yield conn
            return
        engine = create_async_engine(
            self.url, poolclass=NullPool, connect_args={"timeout": self._connect_timeout_s}
        )
        try:
            async with engine.begin() as conn:
                yield conn
        finally:
            await engine.dispose()

    async def ping(self) -> None:
        with _unavailable_when_cut(self.retry_after_s, every_dbapi_error=True):
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))

    async def closed_in_background(self) -> None:
        """Waits until the sessions ``single_statement`` closes in the background are."""
        while self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def dispose(self) -> None:
        await self.closed_in_background()
        await self.engine.dispose()


@asynccontextmanager
async def _unit_of_work(
    sessions: async_sessionmaker[AsyncSession], retry_after_s: float
) -> AsyncIterator[AsyncSession]:
    with _unavailable_when_cut(retry_after_s):
        async with sessions() as session, session.begin():
            yield session


async def _close_quietly(session: AsyncSession) -> None:
    try:
        await session.commit()
        await session.close()
    except Exception:
        log.exception("closing a single-statement session failed")


@contextmanager
def _unavailable_when_cut(
    retry_after_s: float, *, every_dbapi_error: bool = False
) -> Iterator[None]:
    """The database out of reach is ``Unavailable``, with a retry hint: a connection
    refused, lost or timed out (``OSError`` and ``TimeoutError`` come through
    SQLAlchemy untranslated from asyncpg's connect and its ``command_timeout``), a
    statement the server cancelled, or no free connection in the pool in time. Other
    database errors (constraints, bugs) pass."""
    try:
        yield
    except DBAPIError as exc:
        if every_dbapi_error or _is_connection_failure(exc):
            raise _unavailable(retry_after_s) from exc
        raise
    except (OSError, TimeoutError, PoolTimeout) as exc:
        raise _unavailable(retry_after_s) from exc


def _unavailable(retry_after_s: float) -> Unavailable:
    return Unavailable("the database is unreachable", retry_after=retry_after_s)


# SQLSTATEs of a database that cannot serve now: query_canceled (statement_timeout),
# admin_shutdown, crash_shutdown, cannot_connect_now (starting up or shutting down),
# too_many_connections.
_UNAVAILABLE_SQLSTATES = frozenset({"57014", "57P01", "57P02", "57P03", "53300"})


def _is_connection_failure(exc: DBAPIError) -> bool:
    if getattr(exc, "connection_invalidated", False):
        return True
    orig = exc.orig
    if isinstance(orig, ConnectionError | OSError | TimeoutError):
        return True
    sqlstate = getattr(orig, "sqlstate", None) or getattr(
        getattr(orig, "__cause__", None), "sqlstate", None
    )
    if sqlstate in _UNAVAILABLE_SQLSTATES:
        return True
    # SQLite: another process held the write lock past the busy timeout.
    return str(orig).startswith("database is locked")


def _ping_when_idle(engine: AsyncEngine, after_s: float) -> None:
    """Check a pooled PostgreSQL connection before use only if it sat idle ``after_s``.

    SQLAlchemy's ``pool_pre_ping`` checks every checkout, and on asyncpg its ping is
    three round trips (BEGIN, an empty query, ROLLBACK): under load that was 1-2 ms in
    front of every message's store. A connection in steady use is checked by its use:
    if PostgreSQL restarted meanwhile, that request fails as ``unavailable`` and
    SQLAlchemy drops the whole pool. One that sat idle (the likelier one to have been
    cut by a restart, a proxy or a firewall) is pinged, and replaced if dead.
    """

    @event.listens_for(engine.sync_engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < after_s:
            return
        try:
            dbapi_connection.ping()
        except Exception as exc:
            # The pool discards this connection and checks out another.
            raise DisconnectionError("a pooled connection did not answer") from exc


def _configure_sqlite(engine: AsyncEngine, *, busy_timeout_ms: int) -> None:
    """WAL, foreign keys, a busy timeout, and BEGIN IMMEDIATE for transactions that write.

    pysqlite's default deferred BEGIN lets two transactions both read and then both try
    to write, and one fails at once with "database is locked" (the busy handler is not
    consulted for that upgrade). Taking the write lock at BEGIN makes writers queue on
    the busy timeout instead; WAL keeps readers from blocking on them. Transactions
    from ``Database.read`` only read, so they begin deferred and never wait for the lock;
    those from ``Database.single_statement`` are SQLite's own, one statement long.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "reset")
    def _on_reset(dbapi_connection: Any, _record: Any, _state: Any) -> None:
        # The pool rolls back every connection it gets back, and on aiosqlite that is a
        # trip to the driver's thread after every commit. SQLite says for itself
        # whether a transaction is open (our connections are in autocommit mode and
        # every transaction BEGINs explicitly), so roll back only then.
        if dbapi_connection.driver_connection.in_transaction:
            dbapi_connection.rollback()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        options = conn.get_execution_options()
        if options.get("parley_single_statement", False):
            return  # ``Database.single_statement``: SQLite's own statement transaction
        read_only = options.get("parley_read_only", False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")
