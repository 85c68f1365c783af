"""The asyncpg connection under SQLAlchemy's, for the few statements that every step runs.

Repositories build their statements with SQLAlchemy Core. On this project's 2-core machine
SQLAlchemy adds 150-250 µs of CPU to each statement on top of asyncpg's 100 (``bench/``
README section). The generic statements that every consumer step and every relay batch
runs (the inbox claim, the unit of work's writes at commit, the relay's read and mark) go to
the driver directly through these helpers, inside SQLAlchemy's transaction, with the SQL
made once per table and column set.

Values are passed as asyncpg takes them; JSON columns are serialised here, as SQLAlchemy's
asyncpg dialect (which registered the connection's JSON codecs) would.
"""

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import cache
from typing import Any

import asyncpg
import orjson
from sqlalchemy import ARRAY, JSON, Table
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


async def driver(conn: AsyncConnection) -> asyncpg.Connection:
    """The asyncpg connection under ``conn``, inside ``conn``'s transaction.

    SQLAlchemy begins a transaction lazily, at its first statement: if none has run yet,
    a trivial one does, so that what runs on the driver is part of the transaction."""
    raw: asyncpg.Connection = (await conn.get_raw_connection()).driver_connection
    if not raw.is_in_transaction():
        await conn.exec_driver_sql("SELECT 1")
    return raw


@asynccontextmanager
async def transaction(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection inside a transaction of the driver's own, committed on success
    (for work that runs no SQLAlchemy statement at all). A connection that died is
    invalidated, so the pool does not hand it out again."""
    async with engine.connect() as conn:
        raw: asyncpg.Connection = (await conn.get_raw_connection()).driver_connection
        try:
            async with raw.transaction():
                yield raw
        except BaseException:
            if raw.is_closed():
                await conn.invalidate()
            raise


@cache
def insert_sql(table: Table, columns: tuple[str, ...], skip_existing: bool = False) -> str:
    """``INSERT INTO table (columns)`` of rows given as one array per column
    (:func:`column_arrays`), in the order given (serial ids ascend); ``ON CONFLICT DO
    NOTHING`` if ``skip_existing``.

    One statement for any number of rows. ``executemany`` ran the statement once per row:
    in a closed loop of the bench, ``pg_stat_statements`` gave 0.14-0.16 ms of PostgreSQL
    per row inserted into the bigger tables that way, 0.09-0.11 ms in one statement."""
    names = ", ".join(_quoted(c) for c in columns)
    conflict = " ON CONFLICT DO NOTHING" if skip_existing else ""
    return (
        f"INSERT INTO {qualified(table)} ({names}) SELECT {names}"
        f" FROM {_unnest(table, columns)} ORDER BY {_ORDINAL}{conflict}"
    )


@cache
def update_sql(table: Table, key: str, columns: tuple[str, ...]) -> str:
    """``UPDATE table SET columns`` of the rows whose ``key`` column matches, given as one
    array per column, the key's first (:func:`column_arrays`); one statement for any
    number of rows, each row at most once."""
    sets = ", ".join(f"{_quoted(c)} = u.{_quoted(c)}" for c in columns)
    return (
        f"UPDATE {qualified(table)} AS t SET {sets} FROM {_unnest(table, (key, *columns))}"
        f" WHERE t.{_quoted(key)} = u.{_quoted(key)}"
    )


_ORDINAL = "caravan_ordinal"
_POSTGRESQL = postgresql.asyncpg.dialect()  # type: ignore[no-untyped-call]


def _unnest(table: Table, columns: tuple[str, ...]) -> str:
    """``unnest($1::type[], ...) WITH ORDINALITY AS u(columns, ordinal)``."""
    arrays = ", ".join(f"${i}::{_array_type(table, c)}" for i, c in enumerate(columns, start=1))
    names = ", ".join(_quoted(c) for c in (*columns, _ORDINAL))
    return f"unnest({arrays}) WITH ORDINALITY AS u({names})"


def _array_type(table: Table, column: str) -> str:
    sql_type = table.c[column].type
    if isinstance(sql_type, ARRAY):  # unnest would flatten an array of arrays
        raise TypeError(f"{table.name}.{column}: array columns are not written in bulk")
    return f"{sql_type.compile(dialect=_POSTGRESQL)}[]"


def column_arrays(
    table: Table, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]
) -> list[list[Any]]:
    """The values of ``columns`` in ``rows``, as the driver takes them: one list per column
    (the arguments of :func:`insert_sql` and :func:`update_sql`)."""
    json = _json_columns(table)
    arrays: list[list[Any]] = [[] for _ in columns]
    for row in rows:
        for array, c in zip(arrays, columns, strict=True):
            array.append(_json(row[c], json[c]) if c in json else row[c])
    return arrays


@cache
def _json_columns(table: Table) -> dict[str, bool]:
    """The JSON columns of ``table``, each with whether None is SQL NULL (else JSON null)."""
    return {c.name: c.type.none_as_null for c in table.columns if isinstance(c.type, JSON)}


def _json(value: Any, none_as_null: bool) -> str | None:
    if value is None and none_as_null:
        return None
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def qualified(table: Table) -> str:
    """``table``'s name for SQL text, with its schema, quoted."""
    schema = f"{_quoted(table.schema)}." if table.schema else ""
    return schema + _quoted(table.name)


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


__all__ = ["column_arrays", "driver", "insert_sql", "qualified", "transaction", "update_sql"]
