"""A transaction given up part-way (a request's ``http_db_timeout_seconds``, a service's stop,
a consumer's deadline: :class:`shared.db.engine.Bound` cancels its task) never leaves its
connection inside a transaction for the next work to use.

Session 62's drill (a console holding a lock on orders.orders for a minute, POST /orders at
5/s meeting its 8 s deadline) found a pooled connection left so: every later transaction on it
was a SAVEPOINT inside the one left open, committing nothing, and 107 orders answered 202 were
never written, while the relay, reading on the same connection, published their events."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from caravan.system import Infrastructure
from shared.db import Database, driver
from shared.db.engine import LEFT_INSIDE, Bound
from shared.settings import Settings
from tests.harness import forwarder, free_port, scratch_database

TABLE = "cancelled"
POOL = 2  # 4 connections at a peak
GIVEN_UP = 0.5  # the work's bound, seconds


@dataclass
class Held:
    """A service's database reached through a forwarder that stops passing bytes once the
    client sends one that contains ``at`` (then cleared), until ``passing`` is set again."""

    db: Database
    url: str
    passing: asyncio.Event
    at: bytes | None = None


@asynccontextmanager
async def held(database_url: str, answer: float | None = None) -> AsyncIterator[Held]:
    """:class:`Held`; ``answer``: the service's ``db_answer_timeout_seconds`` (asyncpg's
    ``command_timeout``), else its default (two minutes)."""
    async with scratch_database(database_url, "caravan_cancelled") as url:
        target, port = make_url(url), free_port()
        via = target.set(host="127.0.0.1", port=port, query={})
        settings = Settings(
            database_url=via.render_as_string(hide_password=False),
            db_pool_size=POOL,
            db_answer_timeout_seconds=answer,
        )
        db = Database(settings, "orders")
        hold = Held(db, url, asyncio.Event())
        hold.passing.set()

        def holds(data: bytes) -> bool:
            if hold.at is not None and hold.at in data:
                hold.at = None
                return True
            return False

        pg = forwarder("127.0.0.1", target.port or 5432, hold.passing, holds)
        try:
            async with await asyncio.start_server(pg, "127.0.0.1", port):
                async with db.transaction() as conn:
                    await conn.execute(text(f"create table {TABLE} (n int primary key)"))
                yield hold
        finally:
            hold.passing.set()
            await db.dispose()


async def _given_up(work: Callable[[], Awaitable[None]]) -> None:
    """``work`` (a coroutine function) under a :class:`Bound` of :data:`GIVEN_UP`, as a
    request's deadline bounds it: it must be given up (a ``TimeoutError``)."""
    with pytest.raises(TimeoutError):
        async with Bound(GIVEN_UP):
            await work()


async def _committed(url: str) -> set[int]:
    """The rows of :data:`TABLE` committed, as a connection of another client sees them."""
    other = create_async_engine(url, poolclass=NullPool)
    try:
        async with other.connect() as conn:
            return set((await conn.scalars(text(f"select n from {TABLE}"))).all())
    finally:
        await other.dispose()


async def _every_connection_outside_a_transaction(db: Database) -> None:
    """Take every connection the pool holds at once (and more, up to its peak): none is
    inside a transaction of the server's or of asyncpg's."""
    async with asyncio.TaskGroup() as group:
        ready = asyncio.Barrier(2 * POOL + 1)
        states: list[tuple[bool, bool]] = []

        async def take() -> None:
            async with db.engine.connect() as conn:
                raw: asyncpg.Connection = (await conn.get_raw_connection()).driver_connection
                states.append((raw.is_in_transaction(), raw._top_xact is not None))
                await ready.wait()

        for _ in range(2 * POOL):
            group.create_task(take())
        await ready.wait()
    assert states == [(False, False)] * (2 * POOL), states


async def _each_write_committed(hold: Held, first: int) -> None:
    """Writes on every connection of the pool at once, through SQLAlchemy and the driver
    (as the unit of work writes at commit): each one committed."""
    rows = list(range(first, first + 2 * POOL))

    async def write(n: int) -> None:
        async with hold.db.transaction() as conn:
            if n % 2:
                await conn.execute(text(f"insert into {TABLE} values (:n)"), {"n": n})
            else:
                raw = await driver.driver(conn)
                await raw.execute(f"insert into {TABLE} values ($1)", n)
            await asyncio.sleep(0.05)  # each on a connection of its own

    await asyncio.gather(*(write(n) for n in rows))
    lost = set(rows) - await _committed(hold.url)
    assert not lost, f"written, committed, and not there: {sorted(lost)}"


@pytest.mark.parametrize("at", [b"BEGIN", b"COMMIT", b"ROLLBACK"])
@pytest.mark.parametrize("own", [False, True], ids=["sqlalchemy's", "the driver's own"])
async def test_a_transaction_given_up_at_its_begin_or_end_leaves_no_connection_inside_it(
    infrastructure: Infrastructure, at: bytes, own: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """The server not answering the transaction's ``BEGIN`` (as the driver's statements
    begin it: shared/db/driver.py), its ``COMMIT``, or the ``ROLLBACK`` of work that failed,
    the work is given up; the server then answering, every connection of the pool is outside
    a transaction and each write on it is committed. A transaction SQLAlchemy began (the
    unit of work's), or the driver's own (``driver.transaction``: the relay's).

    A ``BEGIN`` given up left the connection inside asyncpg's transaction, its next one a
    ``SAVEPOINT`` in it: "written, committed, and not there: [1]"."""
    async with held(infrastructure.database_url) as hold:

        @asynccontextmanager
        async def begun() -> AsyncIterator[asyncpg.Connection]:
            if own:
                async with driver.transaction(hold.db.engine) as raw:
                    yield raw
            else:
                async with hold.db.transaction() as conn:
                    hold.at = at
                    yield await driver.driver(conn)

        async def work() -> None:
            if own:
                hold.at = at
            async with begun() as raw:
                if at == b"BEGIN":
                    return
                await raw.execute(f"insert into {TABLE} values (0)")
                if at == b"ROLLBACK":
                    raise RuntimeError("the work failed")

        await _given_up(work)
        hold.passing.set()
        await _each_write_committed(hold, 1)
        await _every_connection_outside_a_transaction(hold.db)
        if at == b"ROLLBACK":  # a COMMIT sent may be made once the server goes on
            assert 0 not in await _committed(hold.url)
        _none_left_inside(caplog)


def _none_left_inside(caplog: pytest.LogCaptureFixture) -> None:
    """No connection reached the pool inside a transaction: each was closed where its work
    was given up (shared/db/driver.py), not by the pool's guard at its checkin (which says
    :data:`LEFT_INSIDE`: a path that leaves one so)."""
    said = [r.getMessage() for r in caplog.records if LEFT_INSIDE in r.getMessage()]
    assert not said, said


async def test_a_connection_whose_begin_was_given_up_is_not_used_again_in_its_checkout(
    infrastructure: Infrastructure,
) -> None:
    """The driver's ``BEGIN`` (:func:`driver.driver`) given up, and the work going on on the
    same connection (a step that gave up a part of its work and went on): the connection is
    closed there and then, and the next statement on it fails, never committing nothing.

    Left as it was, asyncpg held the ``BEGIN`` given up as the connection's transaction, the
    server began it once it went on, and the next statement ran as a ``SAVEPOINT`` inside it,
    committed without an error: "written, committed, and not there"."""
    async with held(infrastructure.database_url) as hold:
        failed: Exception | None = None
        try:
            async with hold.db.transaction() as conn:
                raw: asyncpg.Connection = (await conn.get_raw_connection()).driver_connection
                hold.at = b"BEGIN"
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(GIVEN_UP):
                        await driver.driver(conn)
                closed = raw.is_closed()
                hold.passing.set()
                await conn.execute(text(f"insert into {TABLE} values (1)"))
        except Exception as exc:
            failed = exc
        committed = 1 in await _committed(hold.url)
        assert failed is not None or committed, "written, committed, and not there: [1]"
        assert closed, "the connection whose BEGIN was given up was left open"
        assert isinstance(failed, sa_exc.DBAPIError) and failed.connection_invalidated, failed


ANSWER = 1.0  # the service's db_answer_timeout_seconds in the test below


@pytest.mark.parametrize("at", [b"BEGIN", b"COMMIT", b"ROLLBACK"])
@pytest.mark.parametrize("how", ["sqlalchemy's", "begun by the driver", "the driver's own"])
async def test_a_transactions_begin_or_end_unanswered_in_time_leaves_no_connection_inside_it(
    infrastructure: Infrastructure, at: bytes, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The server not answering a transaction's ``BEGIN``, ``COMMIT`` or ``ROLLBACK`` within
    the service's ``db_answer_timeout_seconds`` (asyncpg's ``command_timeout``), then going
    on a moment later: the work fails or is committed, never answered as done and lost, and
    no connection is left inside a transaction. A transaction SQLAlchemy began, one it began
    through the driver's first statement (:func:`driver.driver`), or the driver's own
    (``driver.transaction``)."""
    async with held(infrastructure.database_url, answer=ANSWER) as hold:

        @asynccontextmanager
        async def begun() -> AsyncIterator[asyncpg.Connection]:
            if how == "the driver's own":
                hold.at = at
                async with driver.transaction(hold.db.engine) as raw:
                    yield raw
                return
            async with hold.db.transaction() as conn:
                hold.at = at
                if how == "sqlalchemy's":
                    await conn.execute(text(f"insert into {TABLE} values (0)"))
                yield await driver.driver(conn)

        async def goes_on() -> None:
            await asyncio.sleep(ANSWER + 0.3)
            hold.passing.set()

        async def work() -> None:
            async with begun() as raw:
                await raw.execute(f"insert into {TABLE} values (0) on conflict do nothing")
                if at == b"ROLLBACK":
                    raise RuntimeError("the work failed")

        server = asyncio.create_task(goes_on())
        failed: BaseException | None = None
        try:
            await work()
        except Exception as exc:
            failed = exc
        await server
        if at != b"ROLLBACK":
            assert failed is not None or 0 in await _committed(hold.url), (
                "written, committed, and not there: [0]"
            )
        await _each_write_committed(hold, 1)
        await _every_connection_outside_a_transaction(hold.db)
        if at == b"ROLLBACK":
            assert 0 not in await _committed(hold.url)
        _none_left_inside(caplog)


@pytest.mark.parametrize("through", ["driver", "sqlalchemy", "the driver's own"])
async def test_a_transaction_given_up_waiting_on_a_lock_leaves_no_connection_inside_it(
    infrastructure: Infrastructure, through: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A write waiting on a lock another session holds (a console's ``LOCK TABLE``) given up,
    the lock then released: every connection of the pool is outside a transaction, and each
    write on it is committed. On the driver in SQLAlchemy's transaction (the unit of work's
    writes), through SQLAlchemy, or in the driver's own (``driver.transaction``: the relay's
    and retention's statements, a stop cancelling them)."""
    async with held(infrastructure.database_url) as hold:
        locker = create_async_engine(hold.url, poolclass=NullPool)
        try:
            async with locker.begin() as lock:
                await lock.execute(text(f"lock table {TABLE}"))

                async def work() -> None:
                    if through == "the driver's own":
                        async with driver.transaction(hold.db.engine) as own:
                            await own.execute(f"insert into {TABLE} values (0)")
                        return
                    async with hold.db.transaction() as conn:
                        if through == "driver":
                            raw = await driver.driver(conn)
                            await raw.execute(f"insert into {TABLE} values (0)")
                        else:
                            await conn.execute(text(f"insert into {TABLE} values (0)"))

                for _ in range(3):
                    await _given_up(work)
        finally:
            await locker.dispose()
        await _each_write_committed(hold, 1)
        await _every_connection_outside_a_transaction(hold.db)
        assert 0 not in await _committed(hold.url)
        _none_left_inside(caplog)
