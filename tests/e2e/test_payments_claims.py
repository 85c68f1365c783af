"""The claim fence of the prepaid gateway loop (``services/payments/prepaid.py``), on real
PostgreSQL. The payments service is stopped meanwhile, so that its own loop claims nothing.
"""

import uuid
from collections.abc import AsyncIterator

import orjson
import pytest
from sqlalchemy import insert, select

from services.payments.adapters.tables import outbox, payments
from services.payments.prepaid import Work, record_voided
from shared.messaging.uow import UnitOfWork
from shared.topics import Topic
from tests.harness import System


@pytest.fixture
async def uow(caravan: System) -> AsyncIterator[UnitOfWork]:
    async with caravan.alone("payments") as uow:
        yield uow


async def test_a_void_answered_twice_is_recorded_once(uow: UnitOfWork) -> None:
    # A void call that outlived its lease was made again; both calls are answered: the
    # second finds the payment voided already, and says nothing more.
    order_id = str(uuid.uuid4())
    async with uow.begin() as tx:
        await tx.conn.execute(
            insert(payments).values(
                order_id=order_id,
                buyer_id="claims-buyer",
                method="prepaid",
                amount_fen=3500,
                status="voiding",
                attempts=2,
            )
        )
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
