"""A Core statement run on SQLite in one trip to aiosqlite's thread.

Through SQLAlchemy's aiosqlite adapter a statement that returns rows is four trips
to the driver's thread (a cursor, the statement, the fetch, the close), and each
trip waits its turn on the event loop when it comes back. On a loop that is busy
starting an answer, those waits made storing the question the longest thing in front
of its first token. aiosqlite's ``execute_fetchall`` does all four in one trip; this
compiles the statement once with SQLAlchemy, converts the parameters with the
columns' own bind processors, and raises SQLAlchemy's exceptions, so callers see the
same results and errors as from ``connection.execute``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement


class OneTripStatement:
    def __init__(self, statement: ClauseElement) -> None:
        self._statement = statement
        self._compiled: _Compiled | None = None

    async def fetch(self, connection: AsyncConnection, params: dict[str, Any]) -> list[Any]:
        """The statement's rows, run on ``connection``'s aiosqlite connection (in
        whatever transaction it is in)."""
        compiled = self._compiled
        if compiled is None:
            compiled = self._compiled = _Compiled(self._statement, connection.dialect)
        arguments = compiled.arguments(params)
        driver = (await connection.get_raw_connection()).driver_connection
        assert driver is not None, "a connection the pool gave out has its driver's"
        try:
            return list(await driver.execute_fetchall(compiled.sql, arguments))
        except sqlite3.Error as exc:
            raise DBAPIError.instance(
                compiled.sql, arguments, exc, sqlite3.Error, dialect=connection.dialect
            ) from exc


class _Compiled:
    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler) and compiled.positiontup is not None
        self._compiled = compiled
        self.sql = str(compiled)
        self._names: Sequence[str] = compiled.positiontup
        self._processors: dict[str, Callable[[Any], Any] | None] = {
            # ``binds`` is keyed by each bind's rendered name, as ``positiontup`` is.
            name: bind.type.bind_processor(dialect)
            for name, bind in compiled.binds.items()
        }

    def arguments(self, params: dict[str, Any]) -> tuple[Any, ...]:
        values = self._compiled.construct_params(params)
        out = []
        for name in self._names:
            value = values[name]
            process = self._processors[name]
            out.append(process(value) if process is not None and value is not None else value)
        return tuple(out)
