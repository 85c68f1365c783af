"""The asyncpg connection under SQLAlchemy's, for the few statements that every step runs.

Repositories build their statements with SQLAlchemy Core. On this project's 2-core machine
SQLAlchemy adds 150-250 µs of CPU to each statement on top of asyncpg's 100
(``bench/README.md``). The generic statements that every consumer step and every relay batch
runs (the inbox claim, the unit of work's writes at commit, the relay's read and mark) go to
the driver directly through these helpers, inside SQLAlchemy's transaction, with the SQL
made once per table and column set. A repository's own hot statements can go the same way
with :func:`fetch`: still built with Core, compiled once, run on the driver.

Values are passed as asyncpg takes them; JSON columns are serialised here, as SQLAlchemy's
asyncpg dialect (which registered the connection's JSON codecs) would.
"""

import re
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import cache
from operator import itemgetter
from typing import Any

import asyncpg
import orjson
from sqlalchemy import (
    ARRAY,
    JSON,
    ClauseElement,
    ColumnElement,
    Select,
    String,
    Table,
    any_,
    bindparam,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.types import TypeEngine

from shared.db.engine import discard, inside_a_transaction


async def driver(conn: AsyncConnection) -> asyncpg.Connection:
    """The asyncpg connection under ``conn``, inside ``conn``'s transaction.

    SQLAlchemy begins a transaction lazily, at its first statement. If ``conn`` has begun
    one (``engine.begin()``) that has not reached the database yet, it is started here the
    way SQLAlchemy's asyncpg adapter starts it, without a statement; on a connection that has
    begun none, a trivial statement begins it. Either way what runs on the driver is part of
    ``conn``'s transaction, which SQLAlchemy commits or rolls back. (A transaction whose
    first statement went through SQLAlchemy cost 30-450 µs more CPU than one whose first
    statement went to the driver: ``bench/HISTORY.md``.)"""
    pooled = await conn.get_raw_connection()
    raw: asyncpg.Connection = pooled.driver_connection
    if not raw.is_in_transaction():
        if conn.in_transaction():
            # The adapter's own step (SQLAlchemy 2.1's asyncpg dialect; the lock pins it):
            # BEGIN with the connection's isolation level, or nothing in autocommit.
            adapter: Any = pooled.dbapi_connection
            try:
                await adapter._start_transaction()
            except BaseException as exc:
                # A BEGIN that failed, unanswered in time (asyncpg's command_timeout) or
                # given up (a deadline, a stop) leaves asyncpg holding the transaction it was
                # starting as the connection's own (every later one a SAVEPOINT inside it),
                # and the server may yet begin it: the connection is not used again (session
                # 62: orders answered 202, never written). The last two are raised as they
                # are, as SQLAlchemy raises them (it closes only their connection).
                discard(raw, pooled.info)
                if not isinstance(exc, Exception) or isinstance(exc, TimeoutError):
                    raise
                # Met through SQLAlchemy instead, another fault is SQLAlchemy's error (the
                # connection closed: a connection lost), retried as transient.
                await conn.exec_driver_sql("SELECT 1")
        else:
            await conn.exec_driver_sql("SELECT 1")
    return raw


class Row(asyncpg.Record):  # type: ignore[misc]  # asyncpg is untyped
    """A row that :func:`fetch` returns: its columns by name, ``row.name`` as SQLAlchemy's
    rows have them (and ``row["name"]``, for a column named like one of the driver's record
    methods: ``get``, ``items``, ``keys``, ``values``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


@cache
def _row_class(columns: tuple[str, ...]) -> type[Row]:
    """A :class:`Row` with these columns as attributes of its class, each read by the
    record's own look-up: 45 ns, where a name found only by :meth:`Row.__getattr__` took
    340 (bench/HISTORY.md, session 58). A name :class:`Row` has (a record method) is left
    to it, as before."""
    attributes = {c: property(itemgetter(c)) for c in columns if not hasattr(Row, c)}
    return type("Row", (Row,), attributes)


_ROW_CLASSES: dict[str, type[Row]] = {}
"""Each statement's :func:`_row_class`, by its SQL text, once :func:`fetch` has met its
columns (its first rows)."""


async def fetch(conn: AsyncConnection, statement: ClauseElement, **params: Any) -> list[Row]:
    """Run ``statement`` (SQLAlchemy Core, its values bound by name with ``bindparam``, a
    statement object made once: it is compiled at its first call) on the driver, inside
    ``conn``'s transaction: without SQLAlchemy's cost per execution, and its result
    processing (JSON comes decoded, by the codecs SQLAlchemy registered on the connection;
    from a statement's second call on, its rows' columns are attributes of their class:
    :func:`_row_class`).
    ``column IN (...)`` is written ``column = ANY(:array)`` (:func:`any_of`): one statement
    text for any number of values (an IN list is refused)."""
    sql, names, fixed = _compiled(statement)
    raw = await driver(conn)
    args = (params.get(n, fixed.get(n)) for n in names)
    record_class = _ROW_CLASSES.get(sql, Row)
    rows: list[Row] = await raw.fetch(sql, *args, record_class=record_class)
    if record_class is Row and rows:
        _ROW_CLASSES[sql] = _row_class(tuple(rows[0].keys()))
    return rows


def any_of(column: ColumnElement[Any], name: str = "keys") -> ColumnElement[bool]:
    """``column = ANY(:name)``, an array of the column's type (text without its length,
    :func:`_bound`): how a statement for :func:`fetch` looks up the rows of a batch's keys."""
    return column == any_(bindparam(name, type_=ARRAY(_bound(column.type))))


def locked_by_key(statement: Select[Any], column: ColumnElement[Any]) -> Select[Any]:
    """``statement`` restricted to the rows whose ``column`` is one of ``:keys``, locked in
    ``column`` order (two batches never wait for each other's rows in opposite orders)."""
    return statement.where(any_of(column)).order_by(column).with_for_update()


@cache
def _compiled(statement: ClauseElement) -> tuple[str, tuple[str, ...], dict[str, Any]]:
    """The SQL text, the names of its parameters in order, and the values of those given in
    the statement itself (literals that SQLAlchemy made parameters)."""
    compiled = statement.compile(dialect=_POSTGRESQL)
    assert isinstance(compiled, SQLCompiler)
    if "POSTCOMPILE" in compiled.string:  # SQLAlchemy expands these at each execution
        raise ValueError(f"{statement}: an IN list here must be an array, written any_of")
    names = tuple(compiled.positiontup or ())
    fixed = {n: compiled.binds[n].value for n in names if not compiled.binds[n].required}
    return compiled.string, names, fixed


@asynccontextmanager
async def transaction(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    """A pooled connection inside a transaction of the driver's own, committed on success
    (for work that runs no SQLAlchemy statement at all). A connection that died, or that
    the work's failure or cancellation left inside the transaction (its ``BEGIN``,
    ``COMMIT`` or ``ROLLBACK`` given up), is closed and never handed out again."""
    async with engine.connect() as conn:
        pooled = await conn.get_raw_connection()
        raw: asyncpg.Connection = pooled.driver_connection
        try:
            async with raw.transaction():
                yield raw
        except BaseException:
            # A connection that died, or that is still inside the transaction (its BEGIN,
            # COMMIT or ROLLBACK given up: asyncpg keeps a BEGIN's as the connection's own),
            # is not used again.
            if raw.is_closed() or inside_a_transaction(raw):
                discard(raw, pooled.info)
            raise


@cache
def claim_sql(inbox: Table) -> str:
    """Record keys in ``inbox`` (two arrays: the keys, and each one's topic), returning those
    that were not there yet: one statement text for any number of keys."""
    return (
        f"INSERT INTO {qualified(inbox)} (key, topic)"
        " SELECT * FROM unnest($1::text[], $2::text[])"
        " ON CONFLICT DO NOTHING RETURNING key"
    )


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


Values = Mapping[str, Any]
"""A row to write: its values by column."""


async def insert_new(
    conn: AsyncConnection, table: Table, key: str, rows: Sequence[Values]
) -> set[Any]:
    """Insert ``rows`` (each of the same columns, ``key`` among them) into ``table`` in one
    statement, inside ``conn``'s transaction, in ``key`` order (:func:`_by_key`), a row whose
    key is taken left out (``ON CONFLICT DO NOTHING``); the keys of the rows inserted."""
    if not rows:
        return set()
    columns = tuple(rows[0])
    sql = f"{insert_sql(table, columns, skip_existing=True)} RETURNING {_quoted(key)}"
    raw = await driver(conn)
    arrays = column_arrays(table, columns, _by_key(rows, key))
    return {row[0] for row in await raw.fetch(sql, *arrays)}


async def upsert(conn: AsyncConnection, table: Table, key: str, rows: Sequence[Values]) -> set[Any]:
    """Write ``rows`` (each of the same columns, ``key`` first) into ``table`` in one
    statement, inside ``conn``'s transaction (:func:`upsert_sql`), in ``key`` order
    (:func:`_by_key`); the keys of the rows inserted or changed."""
    if not rows:
        return set()
    columns = tuple(c for c in rows[0] if c != key)
    sql = upsert_sql(table, key, columns)
    raw = await driver(conn)
    arrays = column_arrays(table, (key, *columns), _by_key(rows, key))
    return {row[0] for row in await raw.fetch(sql, *arrays)}


def _by_key(rows: Sequence[Values], key: str) -> list[Values]:
    """``rows`` in ``key`` order: the order two transactions writing the same keys both take
    them in (each row's key, new or not, is locked as it is written), so that the second
    waits for the first rather than each holding one the other waits for (a deadlock: two
    ``caravan seed`` at once naming the same new buyers in opposite orders)."""
    return sorted(rows, key=lambda row: row[key])


@cache
def upsert_sql(table: Table, key: str, columns: tuple[str, ...]) -> str:
    """:func:`insert_sql` of rows given as one array per column, the key's first
    (:func:`column_arrays`); a row whose ``key`` is taken sets ``columns`` on it instead,
    where any of them differs, and is otherwise left as it is. Returns the keys of the rows
    written (inserted or changed): one statement for any number of rows, each key at most
    once, where a seed file ran one per row."""
    target = qualified(table)
    sets = ", ".join(f"{_quoted(c)} = EXCLUDED.{_quoted(c)}" for c in columns)
    differs = " OR ".join(
        f"{target}.{_quoted(c)} IS DISTINCT FROM EXCLUDED.{_quoted(c)}" for c in columns
    )
    return (
        f"{insert_sql(table, (key, *columns))} ON CONFLICT ({_quoted(key)})"
        f" DO UPDATE SET {sets} WHERE {differs} RETURNING {_quoted(key)}"
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


@cache
def combined_sql(parts: tuple[str, ...]) -> str:
    """One statement that runs every one of ``parts`` (data-modifying statements such as
    :func:`insert_sql` and :func:`update_sql` make, each numbering its parameters from $1),
    all but the last as ``WITH`` queries: one round trip instead of one each. The arguments
    are those of each part in turn.

    The parts run on one snapshot, so none sees another's rows: no two may write the same
    table. Constraints and triggers are checked after them all, as after one statement (a
    row may reference a row that another part inserts)."""
    if len(parts) == 1:
        return parts[0]
    offset = 0
    numbered = []
    for part in parts:
        numbered.append(_renumbered(part, offset))
        offset += max((int(n) for n in _PARAM.findall(part)), default=0)
    ctes = ", ".join(f"caravan_write_{i} AS ({sql})" for i, sql in enumerate(numbered[:-1]))
    return f"WITH {ctes} {numbered[-1]}"


def _renumbered(sql: str, offset: int) -> str:
    """``sql`` with each parameter ``$n`` written ``$(n + offset)``."""
    return _PARAM.sub(lambda m: f"${int(m.group(1)) + offset}", sql)


_PARAM = re.compile(r"\$(\d+)")
_ORDINAL = "caravan_ordinal"
_POSTGRESQL = postgresql.asyncpg.dialect()  # type: ignore[no-untyped-call]


def _unnest(table: Table, columns: tuple[str, ...]) -> str:
    """``unnest($1::type[], ...) WITH ORDINALITY AS u(columns, ordinal)``."""
    arrays = ", ".join(f"${i}::{_array_type(table, c)}" for i, c in enumerate(columns, start=1))
    names = ", ".join(_quoted(c) for c in (*columns, _ORDINAL))
    return f"unnest({arrays}) WITH ORDINALITY AS u({names})"


def _bound(sql_type: TypeEngine[Any]) -> TypeEngine[Any]:
    """The type a column's values are bound as: text without its length. An explicit cast
    to ``varchar(16)`` cuts a longer text to 16 characters: written into the column, it is
    refused (``value too long``) as any other insert's; looked up, it finds no row, where the
    cut one would find (and lock) the row of another key."""
    if isinstance(sql_type, String) and sql_type.length is not None:
        return String()
    return sql_type


def _array_type(table: Table, column: str) -> str:
    """The array type a column's values are bound as (:func:`_bound`)."""
    sql_type = table.c[column].type
    if isinstance(sql_type, ARRAY):  # unnest would flatten an array of arrays
        raise TypeError(f"{table.name}.{column}: array columns are not written in bulk")
    return f"{_bound(sql_type).compile(dialect=_POSTGRESQL)}[]"


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


__all__ = [
    "Row",
    "any_of",
    "column_arrays",
    "combined_sql",
    "driver",
    "fetch",
    "insert_new",
    "insert_sql",
    "locked_by_key",
    "qualified",
    "transaction",
    "update_sql",
    "upsert",
    "upsert_sql",
]
