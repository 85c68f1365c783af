"""The claim fence of the prepaid gateway loop (``services/payments/prepaid.py``), on real
PostgreSQL. The payments service is stopped meanwhile, so that its own loop claims nothing;
payments left due by other tests may be claimed here too, leased a minute at most.
"""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from sqlalchemy import delete, insert, select

from services.payments.adapters.tables import outbox, payments
from services.payments.prepaid import Work, claim_due, record_voided
from shared.messaging.uow import UnitOfWork
from shared.topics import Topic
from tests.harness import System


@pytest.fixture
async def uow(caravan: System) -> AsyncIterator[UnitOfWork]:
    async with caravan.alone("payments") as uow:
        yield uow


DECADE = timedelta(days=3650)


async def prepaid(uow: UnitOfWork, status: str, **values: object) -> str:
    """A prepaid payment of 35 yuan in ``status`` (its row as ``values`` say); its order id."""
    order_id = str(uuid.uuid4())
    async with uow.begin() as tx:
        await tx.conn.execute(
            insert(payments).values(
                order_id=order_id,
                buyer_id="claims-buyer",
                method="prepaid",
                amount_fen=3500,
                status=status,
                **values,
            )
        )
    return order_id


async def test_a_charge_one_loop_is_claiming_is_passed_over_by_another_at_once(
    caravan: System, uow: UnitOfWork
) -> None:
    """Two instances' gateway loops claiming at once: the charge the first is claiming (its
    claim not yet committed) is skipped by the second, not claimed by it too once the first
    commits: claimed twice, the buyer's card would be charged under two claims (twice, by a
    gateway that does not deduplicate). Nor does the second wait for the first to commit."""
    # Due before any other, so that a claim of one takes it first.
    order_id = await prepaid(uow, "charging", next_attempt_at=datetime.now(UTC) - DECADE)

    async def other_claim() -> list[str]:
        async with uow.begin() as tx:
            return [w.order_id for w in await claim_due(tx, 60, limit=1)]

    try:
        async with uow.begin() as tx:
            first = [w.order_id for w in await claim_due(tx, 60, limit=1)]
            second, without_waiting = await caravan.beside("payments", other_claim())
        assert first == [order_id]
        assert order_id not in await second
        assert without_waiting, "the other claim waited for the first's lock"
        async with uow.db.engine.connect() as conn:
            query = select(payments.c.status, payments.c.attempts)
            row = (await conn.execute(query.where(payments.c.order_id == order_id))).one()
        assert tuple(row) == ("charging", 1)
    finally:
        # Left charging, the payments service would charge it once its lease lapsed: a
        # payment of no order, money the ledger check at the session's end finds unaccounted.
        async with uow.begin() as tx:
            await tx.conn.execute(delete(payments).where(payments.c.order_id == order_id))


async def test_a_void_answered_twice_is_recorded_once(uow: UnitOfWork) -> None:
    # A void call that outlived its lease was made again; both calls are answered: the
    # second finds the payment voided already, and says nothing more.
    order_id = await prepaid(uow, "voiding", attempts=2)
    work = Work(order_id, "voiding", "claims-buyer", 3500, 2)
    recorded = []
    for _ in range(2):
        async with uow.begin() as tx:
            recorded.append(await record_voided(tx, work))
    assert recorded == [True, False]
    async with uow.db.engine.connect() as conn:
        status = await conn.scalar(select(payments.c.status).where(payments.c.order_id == order_id))
        values = (
            await conn.execute(
                select(outbox.c.value).where(outbox.c.topic == Topic.PAYMENT_EVENTS.value)
            )
        ).scalars()
    events = [orjson.loads(value) for value in values]
    voided = [e for e in events if e["data"].get("order_id") == order_id]
    assert status == "voided"
    assert [e["type"] for e in voided] == ["payment.voided"]
