"""The reminder sweep's query on a database of its own: instalments already reminded of at
their current stage do not fill its page, so the ones after them are reached; and those a
repayment holds are passed over."""

import asyncio
from collections.abc import AsyncIterator
from datetime import date, timedelta

import pytest
from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from caravan import db_roles, system
from services.payments.adapters.tables import instalment_reminders, instalments, loans
from services.payments.reminders import due_instalments
from shared.db.migrate import upgrade
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


@pytest.fixture
async def engine(infrastructure: system.Infrastructure) -> AsyncIterator[AsyncEngine]:
    """A database of its own holding the payments schema."""
    async with scratch_database(infrastructure.database_url, "caravan_reminders") as scratch_url:
        url = db_roles.asyncpg_url(scratch_url)
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            folder = system.REPO_ROOT / "services" / "payments" / "migrations"
            await asyncio.to_thread(upgrade, folder, url)
            yield engine
        finally:
            await engine.dispose()


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
        page = (await sweep.execute(due_instalments(TODAY, 3, limit=10))).all()
        assert [row.loan_id for row in page] == ["other"]
        await sweep.rollback()
        await repaying.commit()
    async with engine.connect() as conn:
        page = (await conn.execute(due_instalments(TODAY, 3, limit=10))).all()
    assert [row.loan_id for row in page] == ["other"]  # paid: not reminded of
