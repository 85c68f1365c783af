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

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import cache
from typing import Any

import asyncpg
import orjson
from sqlalchemy import JSON, Table
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
    """``INSERT INTO table (columns) VALUES ($1, ...)``, ``ON CONFLICT DO NOTHING`` if
    ``skip_existing``."""
    names = ", ".join(_quoted(c) for c in columns)
    values = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    conflict = " ON CONFLICT DO NOTHING" if skip_existing else ""
    return f"INSERT INTO {qualified(table)} ({names}) VALUES ({values}){conflict}"


@cache
def update_sql(table: Table, key: str, columns: tuple[str, ...]) -> str:
    """``UPDATE table SET columns WHERE key = $1``; the columns' values follow the key's."""
    sets = ", ".join(f"{_quoted(c)} = ${i}" for i, c in enumerate(columns, start=2))
    return f"UPDATE {qualified(table)} SET {sets} WHERE {_quoted(key)} = $1"


def arguments(table: Table, columns: Sequence[str], row: Mapping[str, Any]) -> tuple[Any, ...]:
    """``row``'s values of ``columns``, in order, as the driver takes them."""
    json = _json_columns(table)
    return tuple(_json(row[c], json[c]) if c in json else row[c] for c in columns)


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


__all__ = ["arguments", "driver", "insert_sql", "qualified", "transaction", "update_sql"]
