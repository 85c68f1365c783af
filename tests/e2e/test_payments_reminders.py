"""The reminder sweep's query on a database of its own: instalments already reminded of at
their current stage do not fill its page, so the ones after them are reached; those a
repayment holds are passed over; and its index holds only what it may still announce."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date, timedelta
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Select, insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from caravan import db_roles, system
from services.payments.adapters.tables import (
    inbox,
    instalment_reminders,
    instalments,
    loans,
    outbox,
)
from services.payments.handlers import void_loan
from services.payments.lending import loan_view, repay
from services.payments.reminders import announce_due, due_instalments
from shared.db.migrate import alembic_config, migrations_folder
from shared.messaging.uow import Tx
from tests.harness import scratch_database

TODAY = date(2027, 3, 10)


async def add_loan(conn: AsyncConnection, loan_id: str, due: date) -> None:
    """An active loan of 1 yuan in one instalment, due on ``due``."""
    await conn.execute(
        insert(loans).values(
            loan_id=loan_id,
            order_id=f"order-{loan_id}",
            buyer_id="buyer",
            principal_fen=100,
            outstanding_fen=100,
            term_months=1,
            status="active",
        )
    )
    await conn.execute(
        insert(instalments).values(loan_id=loan_id, number=1, due=due, amount_fen=100)
    )


INDEX = {"instalments_to_remind"}
MIGRATIONS = migrations_folder("payments")


async def add_loans_due_later(conn: AsyncConnection, count: int = 200) -> None:
    """``count`` active loans whose instalment is due in 40 days, as most are on a season's
    day: with the tables' statistics, the planner reads the sweep's page through its index by
    due date, not through every active loan's instalments."""
    ids = [f"later-{n}" for n in range(count)]
    await conn.execute(
        insert(loans),
        [
            {
                "loan_id": loan_id,
                "order_id": f"order-{loan_id}",
                "buyer_id": "buyer",
                "principal_fen": 100,
                "outstanding_fen": 100,
                "term_months": 1,
                "status": "active",
            }
            for loan_id in ids
        ],
    )
    later = TODAY + timedelta(days=40)
    await conn.execute(
        insert(instalments),
        [{"loan_id": i, "number": 1, "due": later, "amount_fen": 100} for i in ids],
    )


@pytest.fixture
async def url(infrastructure: system.Infrastructure) -> AsyncIterator[str]:
    """A database of its own, empty."""
    async with scratch_database(infrastructure.database_url, "caravan_reminders") as scratch_url:
        yield db_roles.asyncpg_url(scratch_url)


async def migrate(url: str, revision: str = "head") -> None:
    await asyncio.to_thread(command.upgrade, alembic_config(MIGRATIONS, url), revision)


@pytest.fixture
async def engine(url: str) -> AsyncIterator[AsyncEngine]:
    """The database of its own, holding the payments schema."""
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        await migrate(url)
        yield engine
    finally:
        await engine.dispose()


def _index_names(node: dict[str, Any]) -> set[str]:
    names = {node["Index Name"]} if "Index Name" in node else set()
    for child in node.get("Plans", []):
        names |= _index_names(child)
    return names


@asynccontextmanager
async def transaction(engine: AsyncEngine) -> AsyncIterator[Tx]:
    """A payments transaction, as the service's unit of work opens one."""
    async with engine.begin() as conn:
        tx = Tx(conn=conn, source="caravan/payments", outbox=outbox, inbox=inbox)
        yield tx
        await tx.flush()


async def read_by_index(engine: AsyncEngine, statement: Select[Any]) -> tuple[int, set[str]]:
    """How many instalments ``statement`` reads, run (EXPLAIN ANALYZE, in a transaction rolled
    back): those it returns and those it reads and leaves; and through which indexes."""
    async with engine.connect() as conn:
        await conn.execute(text("ANALYZE payments.loans, payments.instalments"))
        await conn.execute(text("SET LOCAL enable_seqscan = off"))  # whatever the sizes
        sql = statement.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
        plan = await conn.scalar(text(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}"))
        await conn.rollback()
    nodes, read, indexes = [plan[0]["Plan"]], 0, set()
    while nodes:
        node = nodes.pop()
        nodes.extend(node.get("Plans", []))
        if node.get("Relation Name") == "instalments":
            indexes |= _index_names(node)  # its own, or its bitmap's
            kept = node["Actual Rows"] + node.get("Rows Removed by Filter", 0)
            read += kept * node["Actual Loops"]
    return read, indexes


async def test_a_page_of_instalments_already_reminded_does_not_hide_the_next(
    engine: AsyncEngine,
) -> None:
    # loan: (due in days from today, the stage already reminded of)
    plan = {
        "reminded-overdue": (-1, "overdue"),
        "reminded-today": (0, "today"),
        "reminded-upcoming": (2, "upcoming"),
        "not-reminded": (3, None),
        "reminded-before-it-was-overdue": (-2, "upcoming"),
    }
    async with engine.begin() as conn:
        for loan_id, (days, reminded) in plan.items():
            await add_loan(conn, loan_id, TODAY + timedelta(days=days))
            if reminded is not None:
                await conn.execute(
                    insert(instalment_reminders).values(loan_id=loan_id, number=1, stage=reminded)
                )
    async with engine.connect() as conn:
        page = (await conn.execute(due_instalments(TODAY, 3, limit=2))).all()
    # Oldest due first; what was reminded at its current stage is not in the page.
    assert [row.loan_id for row in page] == [
        "reminded-before-it-was-overdue",
        "not-reminded",
    ]


async def test_the_sweep_passes_over_an_instalment_a_repayment_is_paying(
    engine: AsyncEngine,
) -> None:
    """A sweep reading an instalment while a repayment of it commits announced it after the
    ``payment.repaid``: the buyer was reminded of what they had just paid. The sweep skips
    what a repayment holds (the next one finds it paid, or not)."""
    async with engine.begin() as conn:
        for loan_id in ("being-repaid", "other"):
            await add_loan(conn, loan_id, TODAY)
    async with engine.connect() as repaying, engine.connect() as sweep:
        await repaying.execute(  # as lending.repay does, not committed yet
            update(instalments).where(instalments.c.loan_id == "being-repaid").values(paid_fen=100)
        )
        # Bounded: a sweep that waited for the lock (SKIP LOCKED lost) would wait for ever on
        # a transaction this test holds open: a timeout fails it rather than hanging the run.
        async with asyncio.timeout(30):
            page = (await sweep.execute(due_instalments(TODAY, 3, limit=10))).all()
        assert [row.loan_id for row in page] == ["other"]
        await sweep.rollback()
        await repaying.commit()
    async with engine.connect() as conn:
        page = (await conn.execute(due_instalments(TODAY, 3, limit=10))).all()
    assert [row.loan_id for row in page] == ["other"]  # paid: not reminded of


async def test_the_sweep_passes_over_the_instalments_of_a_loan_being_voided(
    engine: AsyncEngine,
) -> None:
    """A sweep reading a loan's instalments while the loan's void committed read the loan
    active still, announced them, and might commit after the ``payment.voided``: the buyer
    was reminded of a loan voided. A void now holds its loan's instalments: the sweep passes
    them over, or the void waits for the sweep that holds them (and is said after it)."""
    async with engine.begin() as conn:
        for loan_id in ("being-voided", "other"):
            await add_loan(conn, loan_id, TODAY)
    async with engine.connect() as voiding, engine.connect() as sweep:
        tx = Tx(conn=voiding, source="caravan/payments", outbox=outbox, inbox=inbox)
        await void_loan(tx, "order-being-voided", "being-voided")  # not committed yet
        # Bounded: a sweep that waited for the lock (SKIP LOCKED lost) would wait for ever on
        # a transaction this test holds open: a timeout fails it rather than hanging the run.
        async with asyncio.timeout(30):
            page = (await sweep.execute(due_instalments(TODAY, 3, limit=10))).all()
        assert [row.loan_id for row in page] == ["other"]
        await sweep.rollback()
        await tx.flush()
        await voiding.commit()
    async with engine.connect() as conn:
        page = (await conn.execute(due_instalments(TODAY, 3, limit=10))).all()
    assert [row.loan_id for row in page] == ["other"]


async def test_the_sweeps_index_leaves_out_what_will_never_be_announced_again(
    engine: AsyncEngine,
) -> None:
    """The sweep ran every few seconds through an index of every unpaid instalment: those of
    voided loans and those announced overdue and left unpaid stayed in it for ever, a set
    that only grows over a season, and every sweep read them all. ``void_loan`` and the
    sweep's overdue announcement take them out of it; what is shown of a loan is the same."""
    due = {  # loan: due in days from today
        "voided-before-any-reminder": -5,
        "voided-after-its-reminder": 1,
        "overdue-then-partly-repaid": -1,
        "due-today": 0,
    }
    async with engine.begin() as conn:
        await add_loans_due_later(conn)
        for loan_id, days in due.items():
            await add_loan(conn, loan_id, TODAY + timedelta(days=days))
    async with transaction(engine) as tx:
        await void_loan(tx, "order-voided-before-any-reminder", "voided-before-any-reminder")
    tomorrow = TODAY + timedelta(days=1)

    async def sweep(today: date) -> int:
        async with transaction(engine) as tx:
            return await announce_due(tx, today, 3)

    sent = [await sweep(TODAY)]
    async with transaction(engine) as tx:
        await void_loan(tx, "order-voided-after-its-reminder", "voided-after-its-reminder")
        await repay(tx, "overdue-then-partly-repaid", "key-1", 40, TODAY)
    sent += [await sweep(TODAY), await sweep(TODAY)]
    # Read by today's sweep: "due-today" alone, which tomorrow's announces overdue.
    assert await read_by_index(engine, due_instalments(TODAY, 3, 500)) == (1, INDEX)
    sent += [await sweep(tomorrow), await sweep(tomorrow)]
    assert await read_by_index(engine, due_instalments(tomorrow, 3, 500)) == (0, INDEX)
    async with engine.connect() as conn:
        stages = select(instalment_reminders.c.loan_id, instalment_reminders.c.stage)
        reminded = {(r.loan_id, r.stage) for r in await conn.execute(stages)}
        shown = await loan_view(conn, "overdue-then-partly-repaid", TODAY)
    # Each stage once; nothing for a voided loan (nor for one voided after its reminder).
    assert sent == [3, 0, 0, 1, 0]
    assert reminded == {
        ("voided-after-its-reminder", "upcoming"),
        ("overdue-then-partly-repaid", "overdue"),
        ("due-today", "today"),
        ("due-today", "overdue"),
    }
    # What is shown of a loan announced overdue, then partly repaid, is as it was.
    assert (shown.overdue_fen, shown.remaining_fen, shown.schedule[0].overdue) == (60, 60, True)


async def test_migration_0012_takes_what_will_never_be_announced_again_out_of_the_index(
    url: str,
) -> None:
    """Instalments of loans voided and instalments announced overdue before 0012 are out of
    the sweep's index once it has run; the others are in it still."""
    await migrate(url, "0011")
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        due = {"voided": -5, "announced-overdue": -1, "announced-upcoming": 1}
        async with engine.begin() as conn:
            await add_loans_due_later(conn)
            for loan_id, days in due.items():
                await add_loan(conn, loan_id, TODAY + timedelta(days=days))
            await conn.execute(
                update(loans).where(loans.c.loan_id == "voided").values(status="voided")
            )
            for loan_id, stage in (
                ("voided", "upcoming"),
                ("announced-overdue", "upcoming"),
                ("announced-overdue", "overdue"),
                ("announced-upcoming", "upcoming"),
            ):
                await conn.execute(
                    insert(instalment_reminders).values(loan_id=loan_id, number=1, stage=stage)
                )
        await migrate(url)
        assert await read_by_index(engine, due_instalments(TODAY, 3, 500)) == (1, INDEX)
        async with engine.connect() as conn:
            page = (await conn.execute(due_instalments(TODAY + timedelta(days=1), 3, 500))).all()
        assert [row.loan_id for row in page] == ["announced-upcoming"]  # due that day
    finally:
        await engine.dispose()
