"""The unit of work's writes at commit (shared/messaging/uow.py ``Tx.flush``), on real
PostgreSQL: the rows held for the commit go in one statement per run of distinct tables,
a row may reference a row inserted in the same statement, a table written twice is written
in two statements (the second sees the first), an update of a row inserted in the same
transaction is its insert's (the row written once), serial ids follow the order given, and a
violated constraint fails the commit and writes nothing. A key longer than its column is
neither cut on the way in nor, looked up, taken for the key it begins with. The inbox
claim, sent on the driver as a transaction's first statement, is part of SQLAlchemy's
transaction. The rows of the driver's ``fetch`` give their columns as attributes, read
without a call of Python's from a statement's second call on."""

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import asyncpg
import pytest
from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from caravan import system
from shared.db import fault
from shared.db.driver import Row, driver, fetch, insert_new, locked_by_key, upsert
from shared.messaging.uow import Tx, UnitOfWork
from tests.harness import backend_pid, scratch_database, started_waiting

metadata = MetaData(schema="writes")
parents = Table(
    "parents",
    metadata,
    Column("parent_id", String(16), primary_key=True),
    Column("n", Integer, nullable=False),
    Column("note", String(16), nullable=True),
)
children = Table(
    "children",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("parent_id", String(16), ForeignKey(parents.c.parent_id), nullable=False),
    Column("v", Integer, nullable=False),
)
inbox = Table(
    "inbox",
    metadata,
    Column("key", String, primary_key=True),
    Column("topic", String, nullable=False),
)


@pytest.fixture
async def engine(infrastructure: system.Infrastructure) -> AsyncIterator[AsyncEngine]:
    async with scratch_database(infrastructure.database_url, "caravan_writes") as url:
        engine = create_async_engine(url)
        async with engine.begin() as conn:
            await conn.exec_driver_sql("create schema writes")
            await conn.run_sync(metadata.create_all)
            await conn.execute(parents.insert().values(parent_id="old", n=0))
        try:
            yield engine
        finally:
            await engine.dispose()


async def flush_counting(tx: Tx) -> list[str]:
    """Flush ``tx``; the statements the flush sent to the test's tables (not the driver's
    look-ups of the types it has not met yet on this connection)."""
    raw = await driver(tx.conn)
    sent: list[str] = []

    def log(record: asyncpg.connection.LoggedQuery) -> None:
        if '"writes".' in record.query:
            sent.append(record.query)

    raw.add_query_logger(log)
    try:
        await tx.flush()
    finally:
        raw.remove_query_logger(log)
    return sent


def new_tx(conn: object) -> Tx:
    return Tx(conn=conn, source="test", outbox=children, inbox=inbox)  # type: ignore[arg-type]


async def test_writes_to_distinct_tables_are_one_statement_and_may_reference_each_other(
    engine: AsyncEngine,
) -> None:
    async with engine.begin() as conn:
        tx = new_tx(conn)
        for parent_id, n in (("new1", 1), ("new2", 2)):
            tx.insert_later(parents, {"parent_id": parent_id, "n": n})
        for parent_id, v in (("new2", 10), ("old", 20), ("new1", 30), ("new2", 40)):
            tx.insert_later(children, {"parent_id": parent_id, "v": v})
        sent = await flush_counting(tx)
    assert len(sent) == 1, sent
    async with engine.connect() as conn:
        rows = (await conn.execute(select(children).order_by(children.c.id))).all()
        assert [(r.parent_id, r.v) for r in rows] == [
            ("new2", 10),
            ("old", 20),
            ("new1", 30),
            ("new2", 40),
        ]
        names = (await conn.execute(select(parents.c.parent_id).order_by("parent_id"))).scalars()
        assert list(names) == ["new1", "new2", "old"]


async def test_a_table_written_twice_takes_a_second_statement_that_sees_the_first(
    engine: AsyncEngine,
) -> None:
    async with engine.begin() as conn:
        tx = new_tx(conn)
        tx.insert_later(parents, {"parent_id": "new", "n": 1})
        tx.insert_later(children, {"parent_id": "new", "v": 7})
        tx.update_later(parents, "parent_id", {"parent_id": "new", "n": 2})
        tx.update_later(parents, "parent_id", {"parent_id": "old", "n": 3})
        sent = await flush_counting(tx)
    assert len(sent) == 2, sent
    async with engine.connect() as conn:
        rows = (await conn.execute(select(parents).order_by("parent_id"))).all()
    assert [(r.parent_id, r.n) for r in rows] == [("new", 2), ("old", 3)]


async def test_an_update_of_a_row_inserted_in_the_transaction_is_folded_into_its_insert(
    engine: AsyncEngine,
) -> None:
    """A payment inserted ``pending`` and set ``authorized`` in the same transaction was
    inserted, then updated: a second version of the row, and a second entry in each of its
    indexes, at every order. The insert takes the update's values; an update setting a
    column the insert does not write, or after such an update, is still an update (the later
    wins)."""
    updated = text("select pg_stat_get_xact_tuples_updated('writes.parents'::regclass)")
    async with engine.begin() as conn:
        tx = new_tx(conn)
        tx.insert_later(parents, {"parent_id": "folded", "n": 1, "note": None})
        tx.update_later(parents, "parent_id", {"parent_id": "folded", "n": 2, "note": "set"})
        sent = await flush_counting(tx)
        assert await conn.scalar(updated) == 0
    assert len(sent) == 1, sent
    async with engine.begin() as conn:
        tx = new_tx(conn)
        tx.insert_later(parents, {"parent_id": "wider", "n": 1})
        tx.update_later(parents, "parent_id", {"parent_id": "wider", "note": "set"})
        tx.insert_later(parents, {"parent_id": "later", "n": 1})
        tx.update_later(parents, "parent_id", {"parent_id": "later", "n": 2, "note": "first"})
        tx.update_later(parents, "parent_id", {"parent_id": "later", "n": 3})
        await flush_counting(tx)
        assert await conn.scalar(updated) == 2
    async with engine.connect() as conn:
        rows = (await conn.execute(select(parents).order_by("parent_id"))).all()
    assert [(r.parent_id, r.n, r.note) for r in rows] == [
        ("folded", 2, "set"),
        ("later", 3, "first"),
        ("old", 0, None),
        ("wider", 1, "set"),
    ]


async def test_a_violated_constraint_fails_the_commit_and_writes_nothing(
    engine: AsyncEngine,
) -> None:
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        async with engine.begin() as conn:
            tx = new_tx(conn)
            tx.insert_later(parents, {"parent_id": "new", "n": 1})
            tx.insert_later(children, {"parent_id": "missing", "v": 1})
            await tx.flush()
    async with engine.connect() as conn:
        assert (await conn.execute(select(parents.c.parent_id))).scalars().all() == ["old"]
        assert (await conn.execute(select(children))).all() == []


async def test_text_too_long_for_its_column_is_refused_not_cut(engine: AsyncEngine) -> None:
    """The arrays were cast to the column's type, ``varchar(16)[]``, and an explicit cast
    cuts text to its length: a payment's 17-character status was written as 16 characters.
    Written as the column is, text too long is refused, as any other insert refuses it."""
    with pytest.raises(asyncpg.StringDataRightTruncationError):
        async with engine.begin() as conn:
            tx = new_tx(conn)
            tx.insert_later(parents, {"parent_id": "x" * 17, "n": 1})
            await tx.flush()
    async with engine.connect() as conn:
        assert (await conn.execute(select(parents.c.parent_id))).scalars().all() == ["old"]


async def test_a_key_longer_than_its_column_finds_and_locks_no_row(engine: AsyncEngine) -> None:
    """A look-up (``locked_by_key``) bound its keys as the column's type, ``varchar(16)[]``,
    and the cast cut a 17-character key to 16: it found, and locked, the row of the key it
    begins with (an order.cancelled whose order_id was an order's and one character more
    locked that order's hold, then failed). Bound as text, it finds no row and locks none."""
    held = "h" * 16
    async with engine.begin() as conn:
        await conn.execute(parents.insert().values(parent_id=held, n=1))
    statement = locked_by_key(select(parents), parents.c.parent_id)
    lock = select(parents).where(parents.c.parent_id == held).with_for_update(nowait=True)
    async with engine.begin() as conn:
        assert await fetch(conn, statement, keys=[held + "x"]) == []
        async with engine.connect() as other:
            assert len((await other.execute(lock)).all()) == 1
        assert [r.parent_id for r in await fetch(conn, statement, keys=[held])] == [held]


async def test_a_statements_rows_give_their_columns_as_attributes_of_their_class(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``fetch``'s rows give each column as an attribute, a column named like a record
    method (``keys``) by its name in brackets (the attribute is the method), and an unknown
    name raises AttributeError, at a statement's first call and later. From its second call
    on, the columns are attributes of the rows' class, read by the record's own look-up:
    every attribute was found by ``Row.__getattr__``, a call of Python's (340 ns, against
    45: bench/HISTORY.md, session 58), and inventory reads some 40 an order."""
    statement = select(parents.c.parent_id, parents.c.n, parents.c.note.label("keys")).where(
        parents.c.parent_id == bindparam("parent")
    )
    looked_up: list[str] = []
    by_getattr = Row.__getattr__

    def counted(row: Row, name: str) -> object:
        looked_up.append(name)
        return by_getattr(row, name)

    monkeypatch.setattr(Row, "__getattr__", counted)
    async with engine.connect() as conn:
        await conn.execute(parents.insert().values(parent_id="p", n=7, note="a note"))
        for _ in range(3):
            looked_up.clear()
            (row,) = await fetch(conn, statement, parent="p")
            assert (row.parent_id, row.n, row["keys"], list(row.keys())) == (
                "p",
                7,
                "a note",
                ["parent_id", "n", "keys"],
            )
            assert not hasattr(row, "missing")
        assert looked_up == ["missing"], looked_up  # the third call's


async def test_the_claim_on_the_driver_is_part_of_sqlalchemys_transaction(
    engine: AsyncEngine,
) -> None:
    """A transaction's first statement is the claim, on the driver (``driver`` begins the
    transaction SQLAlchemy has opened): what SQLAlchemy runs after it sees the claim, nobody
    else does before the commit, and a rollback takes the claim back with the rest (else a
    failed handler's record would be a "duplicate" when retried, and lost)."""

    class Failed(Exception):
        pass

    with pytest.raises(Failed):
        async with engine.begin() as conn:
            tx = new_tx(conn)
            assert await tx.claim_all(["a", "b", "a"], ["t1", "t2", "t1"]) == [True, True, False]
            await conn.execute(parents.insert().values(parent_id="rolled", n=1))
            claimed = (await conn.execute(select(inbox.c.key).order_by("key"))).scalars()
            assert claimed.all() == ["a", "b"]
            async with engine.connect() as other:
                assert (await other.execute(select(inbox))).all() == []
            raise Failed
    async with engine.begin() as conn:
        tx = new_tx(conn)
        assert await tx.claim_all(["a", "c"], ["t1", "t3"]) == [True, True]
        await conn.execute(parents.insert().values(parent_id="kept", n=1))
    async with engine.begin() as conn:
        assert await new_tx(conn).claim_all(["c", "d"], ["t3", "t4"]) == [False, True]
    async with engine.connect() as conn:
        rows = (await conn.execute(select(inbox).order_by("key"))).all()
        assert [(r.key, r.topic) for r in rows] == [("a", "t1"), ("c", "t3"), ("d", "t4")]
        kept = (await conn.execute(select(parents.c.parent_id).order_by("parent_id"))).scalars()
        assert kept.all() == ["kept", "old"]


async def test_a_connection_that_died_fails_its_claim_as_transient_and_leaves_the_pool(
    engine: AsyncEngine,
) -> None:
    """The claim's BEGIN is the first a transaction sends: a pooled connection whose server
    process has gone fails there with an error retried as transient (not a handler failure,
    which would dead-letter the record), and the pool does not hand it out again."""
    single = create_async_engine(engine.url, pool_size=1, max_overflow=0)
    try:
        async with single.connect() as conn:
            dead = await (await driver(conn)).fetchval("select pg_backend_pid()")
            await conn.rollback()
        async with engine.connect() as other:  # the one pooled connection is now the dead one
            raw = await driver(other)
            assert await raw.fetchval("select pg_terminate_backend($1)", dead)
            await other.rollback()
        with pytest.raises(Exception) as failed:  # whichever, so it is transient
            async with single.begin() as conn:
                await new_tx(conn).claim_all(["x"], ["t"])
        assert fault(failed.value).kind.transient, repr(failed.value)
        async with single.begin() as conn:
            assert await new_tx(conn).claim_all(["x"], ["t"]) == [True]
            raw = await driver(conn)
            assert await raw.fetchval("select pg_backend_pid()") != dead
    finally:
        await single.dispose()


async def test_two_writes_of_the_same_new_keys_take_them_in_one_order(
    engine: AsyncEngine,
) -> None:
    """``insert_new`` and ``upsert`` (a seed's writes: credit lines, lots, sellers, products)
    wrote their rows in the order given: two seeds at once naming the same new buyers in
    opposite orders (A, C, B and B, D, A), each held its first and waited for the other's: a
    deadlock, one seed failing. Now each writes them in key order, and the second waits for
    the first, then finds its rows. C and D are held meanwhile by a transaction rolled back
    after both wait, standing for the moment between two rows of a statement."""
    rows = {key: {"parent_id": key, "n": n} for n, key in enumerate("abcd")}
    uow = UnitOfWork(SimpleNamespace(engine=engine), "test", children, inbox)  # type: ignore[arg-type]

    async def inserting(tx: Tx) -> set[Any]:
        return await insert_new(tx.conn, parents, "parent_id", [rows[k] for k in "acb"])

    async def upserting(tx: Tx) -> set[Any]:
        changed = [rows[k] | {"n": 9} for k in "bda"]
        return await upsert(tx.conn, parents, "parent_id", changed)

    async with engine.connect() as held:
        await held.execute(parents.insert(), [rows["c"], rows["d"]])
        running = await started_waiting(uow, await backend_pid(held), [inserting, upserting])
        await held.rollback()
    # Without: asyncpg.exceptions.DeadlockDetectedError: deadlock detected
    assert await asyncio.gather(*running) == [{"a", "b", "c"}, {"a", "b", "d"}]
    async with engine.connect() as conn:
        found = (await conn.execute(select(parents.c.parent_id, parents.c.n))).all()
    assert sorted(found) == [("a", 9), ("b", 9), ("c", 2), ("d", 9), ("old", 0)]
